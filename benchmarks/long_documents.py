"""The integrations' quality-test scenarios over many draws: how often the packaged default reads a fact back
from documents longer than its decoder's 8,192 positions.

    python benchmarks/long_documents.py     # writes benchmarks/long_documents.{json,md}

Each draw plants new codes (`rcc_model.samples.access_codes`) in new chronicles of 1,333 sentences (about
22K tokens), as `tests/integration/test_quality.py` does with one fixed draw:
- chat: `ChatRCC`, one document with three codes at 25, 50 and 75 % depth, one question per code;
- index: `RCCMemoryIndex`, three documents with one code each, one question per code.
A fact counts when the answer contains its code; a draw passes when all three do (what the tests assert).
Chat draw 1 and index draw 2 are the tests' own.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from _report import write_report
from langchain_core.documents import Document
from llama_index.core import Document as LlamaDocument

from rcc_integrations.langchain import ChatRCC
from rcc_integrations.llama_index import RCCMemoryIndex
from rcc_model import RCCModel
from rcc_model.samples import access_codes, chronicle

SENTENCES = 1333


def chat_draw(model: RCCModel, seed: int) -> list[dict]:
    planted = access_codes(3, seed=seed)
    document = chronicle(sentences=SENTENCES, seed=seed + 2, facts=[f for f, _, _ in planted])
    llm = ChatRCC(model=model, max_tokens=16)
    return [{"expected": code, "answer": llm.invoke(question, memory=[Document(page_content=document)]).content}
            for _, question, code in planted]


def index_documents(seed: int) -> list[tuple[str, str, str]]:
    """(document, question, code) of index draw `seed`: one code in each of three chronicles."""
    return [(chronicle(sentences=SENTENCES, seed=10 * (seed - 1) + i, facts=[fact]), question, code)
            for i, (fact, question, code) in enumerate(access_codes(3, seed=seed))]


def index_draw(model: RCCModel, seed: int) -> list[dict]:
    planted = index_documents(seed)
    documents = [LlamaDocument(text=document) for document, _, _ in planted]
    engine = RCCMemoryIndex.from_documents(documents, model=model).as_query_engine(max_tokens=16)
    return [{"expected": code, "answer": str(engine.query(question))} for _, question, code in planted]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--chat-draws", type=int, default=8)
    parser.add_argument("--index-draws", type=int, default=4)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("long_documents"))
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    model = RCCModel.from_pretrained(args.model)
    results = {}
    for name, draw, count in (("chat", chat_draw, args.chat_draws), ("index", index_draw, args.index_draws)):
        draws = []
        for seed in range(1, count + 1):
            rows = draw(model, seed)
            for row in rows:
                row["correct"] = row["expected"] in row["answer"]
            draws.append({"seed": seed, "rows": rows, "passed": all(r["correct"] for r in rows)})
            print(name, seed, [(r["expected"], r["answer"][:30]) for r in rows], flush=True)
        results[name] = draws
    table = [f"Model: `{args.model}` (read_slots {model.config.read_slots}, split {model.config.split}).", "",
             "| scenario | draws passed (all three facts) | facts answered |", "|---|---:|---:|"]
    for name, draws in results.items():
        facts = [r["correct"] for d in draws for r in d["rows"]]
        table.append(f"| {name} | {sum(d['passed'] for d in draws)}/{len(draws)} | {sum(facts)}/{len(facts)} |")
    command = (f"python benchmarks/long_documents.py --model {args.model} --chat-draws {args.chat_draws} "
               f"--index-draws {args.index_draws}")
    write_report(args.out, "Facts in documents longer than the decoder's positions, over many draws", command,
                 table, {"results": results})


if __name__ == "__main__":
    main()
