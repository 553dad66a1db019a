"""How exactly a model reads a 5-digit code back from the one window that holds it: models side by side.

    python benchmarks/window_codes/window_codes.py --models default runs/export-stage9   # writes window_codes.{json,md}

The codes and documents are those of `benchmarks/long_documents/long_documents.py`'s index scenario
(`rcc_model.samples.codes_in_three_documents`: one code per 22K-token chronicle), but no retrieval runs:
each code's window is found by its text, compressed alone and asked about, so what is measured is reading, not finding.
A code cut in two by a window boundary is skipped. This is the step where the integrations' long-document
answers go wrong (`RCCMemoryIndex` reads the right window and still swaps digits), so a training stage meant
to fix it is judged here first. `--alignments 1 2 4` reads each window at that many slot alignments at once
(`rcc_model.aligned_views`, what the integrations do with the model's `read_alignments`), timed from the
stored memory to the answer.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from rcc_model import RCCModel, aligned_views
from rcc_model.samples import codes_in_three_documents

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "_common"))
from _report import write_report


def planted_windows(model: RCCModel, draws: int) -> list[dict]:
    """(question, code, text of the window holding it) for every code a window holds whole."""
    cases = []
    for seed in range(1, draws + 1):
        for document, question, code in codes_in_three_documents(seed):
            windows = [w for w in model.window_texts(document) if code in w]
            cases.append({"draw": seed, "question": question, "expected": code,
                          "window": windows[0] if windows else None})
    return cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["default"])
    parser.add_argument("--draws", type=int, default=16)
    parser.add_argument("--alignments", type=int, nargs="+", default=[1],
                        help="read each window at this many slot alignments at once (rcc_model.aligned_views)")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("window_codes"))
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    results, cases = {}, None
    for name in args.models:
        model = RCCModel.from_pretrained(name)
        if cases is None:  # the same windows for every model (one tokenizer)
            cases = planted_windows(model, args.draws)
        for alignments in args.alignments:
            rows = []
            for case in cases:
                if case["window"] is None:
                    continue
                stored = model.compress(case["window"])
                start = time.perf_counter()  # what reading costs once the memory is stored
                memory = aligned_views(model, stored, [case["window"]], alignments)
                answer = model.ask(memory, case["question"], max_new_tokens=12)
                rows.append({"draw": case["draw"], "expected": case["expected"], "answer": answer,
                             "correct": case["expected"] in answer, "seconds": time.perf_counter() - start})
            key = name if alignments == 1 else f"{name}, {alignments} alignments"
            results[key] = rows
            print(key, sum(r["correct"] for r in rows), "/", len(rows), flush=True)
    skipped = sum(c["window"] is None for c in cases)
    table = [f"{len(cases)} codes over {args.draws} draws; {skipped} cut by a window boundary, skipped.", "",
             "| model | codes read exactly | answered \"does not say\" | draws 1-4 (the index benchmark's) "
             "| seconds per answer (views + decoding) |",
             "|---|---:|---:|---:|---:|"]
    for name, rows in results.items():
        early = [r for r in rows if r["draw"] <= 4]
        table.append(f"| `{name}` | {sum(r['correct'] for r in rows)}/{len(rows)} | "
                     f"{sum('does not say' in r['answer'] for r in rows)} | "
                     f"{sum(r['correct'] for r in early)}/{len(early)} | "
                     f"{sum(r['seconds'] for r in rows) / len(rows):.2f} |")
    command = (f"python benchmarks/window_codes/window_codes.py --models {' '.join(args.models)} --draws {args.draws}"
               f" --alignments {' '.join(map(str, args.alignments))}"
               + (f" --out {args.out}" if args.out != Path(__file__).with_name("window_codes") else ""))
    write_report(args.out, "Reading a code back from the window that holds it", command, table,
                 {"results": results})


if __name__ == "__main__":
    main()
