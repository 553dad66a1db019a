"""Whether the decoder's own likelihood knows a code's digit order, or only greedy decoding loses it.

    python benchmarks/answer_orders/answer_orders.py --rate 8   # writes answer_orders_r8.{md,json}

At r = 8 most needle misses are the code's five digits in the wrong order (`MODEL_CARD.md`). If the decoder
scored the true order above the one it wrote, a search over answers (beam search, or rescoring the orderings of
the digits it wrote) would recover it. Each needle of the grid (`protocols.needle_case`, seeded as `rcc eval
needle`, read as it reads: the budget, BM25, the model's alignments) is answered greedily; then every distinct
ordering of the code's digits and of the answer's is scored by teacher forcing from the same reading, and the
orderings of the answer's digits are ranked as a rescoring would rank them.
"""

from __future__ import annotations

import argparse
import itertools
import random
import sys
import time
from pathlib import Path

from rcc_model import RCCModel
from rcc_model.data.build import load_tokens
from rcc_model.decoding import continuation_logprob
from rcc_model.evaluation.protocols import first_integer, needle_case, read_context

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "_common"))
from _report import machine, write_report

HERE = Path(__file__).resolve().parent


def orderings(digits: str) -> set[str]:
    return {"".join(p) for p in itertools.permutations(digits)} if 0 < len(digits) <= 7 else set()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--rate", type=int, default=8, help="the packaged default's weights for this rate")
    parser.add_argument("--data", type=Path, default=Path("data"), help="folder written by `rcc data build`")
    parser.add_argument("--lengths", type=int, nargs="+", default=[1000, 4000, 8000, 16000])
    parser.add_argument("--depths", type=float, nargs="+", default=[0.1, 0.5, 0.9])
    parser.add_argument("--trials", type=int, default=2)
    parser.add_argument("--read-slots", type=int, default=32)
    parser.add_argument("--out", type=Path, help="report path without suffix (default: answer_orders_rR)")
    args = parser.parse_args()

    import torch

    model = RCCModel.from_pretrained(args.model, rate=args.rate)
    haystack = load_tokens(args.data, "heldout")
    rng = random.Random(0)  # as `rcc eval needle`'s grid draws its cases (seed 0)
    rows, start = [], time.perf_counter()
    for length in args.lengths:
        for depth in args.depths:
            for _ in range(args.trials):
                context, asked, code, _ = needle_case(model, haystack, rng, length, depth)
                memory, prompt, _ = read_context(model, context, asked, args.read_slots)
                written = first_integer(model.generate(memory, prompt, max_new_tokens=12)) or ""
                state = model.prefill_prompt(memory, prompt)
                scores = {o: continuation_logprob(model, state, model.encode_text(o))
                          for o in orderings(code) | orderings(written)}
                ranked = sorted(scores, key=scores.get, reverse=True)
                rescored = max(orderings(written), key=scores.get, default="")
                rows.append({"length": length, "depth": depth, "code": code, "written": written,
                             "rescored": rescored, "code_rank": ranked.index(code) + 1,
                             "orderings": len(orderings(code)), "logprob_code": scores[code],
                             "logprob_written": scores.get(written)})
                print(rows[-1], flush=True)
    seconds = time.perf_counter() - start
    missed = [r for r in rows if r["written"] != r["code"]]
    reordered = [r for r in missed if sorted(r["written"]) == sorted(r["code"])]
    likelier = [r for r in missed if r["logprob_written"] is not None and r["logprob_code"] > r["logprob_written"]]
    body = [f"Model `{args.model}` at r = {args.rate}; the needle grid (lengths {args.lengths}, depths "
            f"{args.depths}, {args.trials} trials, seed 0), read through {args.read_slots} slots at the model's "
            f"{model.config.read_alignments} alignments; {seconds / 60:.1f} minutes.", "",
            "| measure | value |", "|---|---:|",
            f"| greedy answer exact | {len(rows) - len(missed)}/{len(rows)} |",
            f"| the answer's digits rescored, best ordering exact | {sum(r['rescored'] == r['code'] for r in rows)}"
            f"/{len(rows)} |",
            f"| misses whose digits are the code's, reordered | {len(reordered)}/{len(missed)} |",
            f"| misses where the true code is likelier than the answer written | {len(likelier)}/{len(missed)} |",
            "", "| length | depth | code | written | rescored | the code's rank among its orderings | "
            "log p(code) | log p(written) |", "|---:|---:|---|---|---|---:|---:|---:|"]
    body += [f"| {r['length']} | {r['depth']:.0%} | {r['code']} | {r['written'] or '–'} | {r['rescored'] or '–'} | "
             f"{r['code_rank']} of {r['orderings']} | {r['logprob_code']:.2f} | "
             + (f"{r['logprob_written']:.2f} |" if r["logprob_written"] is not None else "– |") for r in rows]
    command = "python benchmarks/answer_orders/answer_orders.py " + " ".join(
        [f"--rate {args.rate}"] + ([f"--model {args.model}"] if args.model != "default" else [])
        + ([f"--lengths {' '.join(map(str, args.lengths))}"] if args.lengths != [1000, 4000, 8000, 16000] else [])
        + ([f"--depths {' '.join(map(str, args.depths))}"] if args.depths != [0.1, 0.5, 0.9] else [])
        + ([f"--trials {args.trials}"] if args.trials != 2 else [])
        + ([f"--read-slots {args.read_slots}"] if args.read_slots != 32 else [])
        + ([f"--data {args.data}"] if args.data != Path("data") else [])
        + ([f"--out {args.out}"] if args.out else []))
    write_report(args.out or HERE / f"answer_orders_r{args.rate}", "Does the decoder's likelihood know a code's "
                 "digit order?", command, body, {"rows": rows}, machine(torch.get_num_threads()))


if __name__ == "__main__":
    main()
