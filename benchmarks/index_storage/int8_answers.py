"""Whether `RCCMemoryIndex` answers from int8 memory as from bfloat16: the same questions, the same documents.

    python benchmarks/index_storage/int8_answers.py   # writes int8_answers.{json,md}

One index is built at bfloat16 (`storage="bfloat16"`) and answers every question; it is persisted, reloaded with
`storage="int8"` (its memory quantised as an int8 persist stores it) and answers them again. Reported: accuracy
of each (the expected keeper or code in the answer), how many answers are identical, and the states' largest
relative error. This decides the index's default storage.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

from rcc_integrations.llama_index import RCCMemoryIndex
from rcc_model import RCCModel

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "_common"))
from _chronicles import corpus
from _report import write_report


def answers(index: RCCMemoryIndex, questions: list[tuple[str, str]], max_tokens: int) -> dict:
    engine, began = index.as_query_engine(max_tokens=max_tokens), time.perf_counter()
    rows = [{"question": q, "expected": e, "answer": str(engine.query(q))} for q, e in questions]
    for row in rows:
        row["correct"] = row["expected"].lower() in row["answer"].lower()
    return {"accuracy": sum(r["correct"] for r in rows) / len(rows), "rows": rows,
            "seconds_per_question": (time.perf_counter() - began) / len(rows)}


def run(model: str, rate: int | None, docs: int, doc_tokens: int, max_tokens: int, seed: int) -> dict:
    documents, questions = corpus(docs, doc_tokens, seed)
    rcc = RCCModel.from_pretrained(model, rate=rate)
    bf16 = RCCMemoryIndex.from_documents(documents, model=rcc, rate=rate, storage="bfloat16")
    with tempfile.TemporaryDirectory() as scratch:
        int8 = RCCMemoryIndex.load_from_disk(bf16.persist(Path(scratch) / "bf16"), model=rcc, storage="int8")
    error = max(((int8.memory_of(i).states.float() - bf16.memory_of(i).states.float()).abs().amax(-1)
                 / bf16.memory_of(i).states.float().abs().amax(-1).clamp_min(1e-12)).max().item()
                for i in bf16.node_ids)
    results = {"model": model, "rate": bf16.rate, "documents": docs, "questions": len(questions),
               "corpus_tokens": sum(bf16.memory_of(i).token_count for i in bf16.node_ids),
               "max_relative_error": error, "bfloat16": answers(bf16, questions, max_tokens),
               "int8": answers(int8, questions, max_tokens)}
    results["identical_answers"] = sum(a["answer"] == b["answer"] for a, b in
                                       zip(results["bfloat16"]["rows"], results["int8"]["rows"]))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--rate", type=int, default=None, help="default: the model's")
    parser.add_argument("--docs", type=int, default=10)
    parser.add_argument("--doc-tokens", type=int, default=2000)
    parser.add_argument("--max-tokens", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("int8_answers"))
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    r = run(args.model, args.rate, args.docs, args.doc_tokens, args.max_tokens, args.seed)
    command = (f"python benchmarks/index_storage/int8_answers.py --model {args.model}"
               + (f" --rate {args.rate}" if args.rate else "")
               + f" --docs {args.docs} --doc-tokens {args.doc_tokens} --max-tokens {args.max_tokens}"
               + f" --seed {args.seed}")
    body = [f"{r['documents']} documents, {r['corpus_tokens']:,} tokens, {r['questions']} questions, r = {r['rate']}.",
            "", "| memory | accuracy | s / question |", "|---|---:|---:|",
            *(f"| {name} | {r[name]['accuracy']:.0%} | {r[name]['seconds_per_question']:.1f} |"
              for name in ("bfloat16", "int8")),
            "", f"Identical answers: {r['identical_answers']} of {r['questions']}. Largest relative error of a "
            f"state vector (max abs error / max abs value): {r['max_relative_error']:.4f}.", "",
            "| question | expected | bfloat16 | int8 |", "|---|---|---|---|",
            *(f"| {a['question']} | {a['expected']} | {a['answer'][:60]!r} | {b['answer'][:60]!r} |"
              for a, b in zip(r["bfloat16"]["rows"], r["int8"]["rows"]))]
    write_report(args.out, "RCCMemoryIndex answers: int8 memory against bfloat16", command, body, r)


if __name__ == "__main__":
    main()
