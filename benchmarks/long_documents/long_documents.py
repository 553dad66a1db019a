"""The integrations' quality-test scenarios over many draws: how often the packaged default reads a fact back
from documents longer than its decoder's 8,192 positions.

    python benchmarks/long_documents/long_documents.py     # writes long_documents.{json,md}

Each draw plants new codes in new chronicles of 1,333 sentences (about 22K tokens; `rcc_model.samples`), as
`tests/integration/test_quality.py` does with one fixed draw:
- chat: `ChatRCC`, one document with three codes at 25, 50 and 75 % depth, one question per code;
- index: `RCCMemoryIndex`, three documents with one code each, one question per code.
A fact counts when the answer contains its code; a draw passes when all three do (what the tests assert).
Chat draw 1 and index draw 2 are the tests' own.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import torch
from langchain_core.documents import Document
from llama_index.core import Document as LlamaDocument

from rcc_integrations.langchain import ChatRCC
from rcc_integrations.llama_index import RCCMemoryIndex
from rcc_model import RCCModel
from rcc_model.samples import codes_in_one_document, codes_in_three_documents

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "_common"))
from _report import write_report


def chat_draw(model: RCCModel, seed: int) -> list[dict]:
    document, planted = codes_in_one_document(seed)
    llm = ChatRCC(model=model, max_tokens=16)
    return [{"expected": code, "answer": llm.invoke(question, memory=[Document(page_content=document)]).content}
            for question, code in planted]


def index_draw(model: RCCModel, seed: int) -> list[dict]:
    planted = codes_in_three_documents(seed)
    documents = [LlamaDocument(text=document) for document, _, _ in planted]
    engine = RCCMemoryIndex.from_documents(documents, model=model).as_query_engine(max_tokens=16)
    return [{"expected": code, "answer": str(engine.query(question))} for _, question, code in planted]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--rate", type=int, help="compression rate (default: the model's own); a folder with "
                        "weights of their own for it (`r8/`) loads those")
    parser.add_argument("--chat-draws", type=int, default=8)
    parser.add_argument("--index-draws", type=int, default=4)
    parser.add_argument("--alignments", type=int, nargs="+",
                        help="read_alignments values to measure, in turn (default: the model's own)")
    parser.add_argument("--abstention-margin", type=float,
                        help="answer with this abstention_margin (default: the model's own)")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("long_documents"))
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    model = RCCModel.from_pretrained(args.model, rate=args.rate)
    if args.abstention_margin is not None:
        model.config = dataclasses.replace(model.config, abstention_margin=args.abstention_margin)
    alignments = args.alignments or [model.config.read_alignments]
    results = {}
    for count_aligned in alignments:
        model.config = dataclasses.replace(model.config, read_alignments=count_aligned)  # what they read with
        for name, draw, count in (("chat", chat_draw, args.chat_draws), ("index", index_draw, args.index_draws)):
            draws = []
            for seed in range(1, count + 1):
                rows = draw(model, seed)
                for row in rows:
                    row["correct"] = row["expected"] in row["answer"]
                draws.append({"seed": seed, "rows": rows, "passed": all(r["correct"] for r in rows)})
                print(name, count_aligned, seed, [(r["expected"], r["answer"][:30]) for r in rows], flush=True)
            results[f"{name}, {count_aligned} alignment{'s' * (count_aligned > 1)}"] = draws
    table = [f"Model: `{args.model}` at r = {model.config.rate} (read_slots {model.config.read_slots}, "
             f"split {model.config.split}, abstention_margin {model.config.abstention_margin}; "
             "alignments: `read_alignments`, the slot alignments of the windows read that are decoded together).",
             "", "| scenario | draws passed (all three facts) | facts answered |", "|---|---:|---:|"]
    for name, draws in results.items():
        facts = [r["correct"] for d in draws for r in d["rows"]]
        table.append(f"| {name} | {sum(d['passed'] for d in draws)}/{len(draws)} | {sum(facts)}/{len(facts)} |")
    command = (f"python benchmarks/long_documents/long_documents.py --model {args.model}"
               + (f" --rate {args.rate}" if args.rate else "")
               + f" --chat-draws {args.chat_draws} --index-draws {args.index_draws}"
               + (f" --alignments {' '.join(map(str, args.alignments))}" if args.alignments else "")
               + (f" --abstention-margin {args.abstention_margin:g}" if args.abstention_margin is not None else "")
               + (f" --out {args.out}" if args.out != Path(__file__).with_name("long_documents") else ""))
    write_report(args.out, "Facts in documents longer than the decoder's positions, over many draws", command,
                 table, {"results": results})


if __name__ == "__main__":
    main()
