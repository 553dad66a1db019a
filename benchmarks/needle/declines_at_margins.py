"""A needle result at other abstention margins, from its declines alone.

    python benchmarks/needle/declines_at_margins.py benchmarks/needle/reading/4k-16k-60/needle.json \
        --data data --margins -1 -0.5

A model answers its abstention where the abstention leads its best other answer by more than its
`abstention_margin`; so at a higher margin every answer given stands and only abstentions can turn into answers.
This replays the result's grid (the same seeded draws, `rcc_model.evaluation.protocols.needle_case`), asks the
trials it declined again at each margin and writes the result's accuracy at each: the run's other answers as
logged, these as asked now. Each replayed draw is checked against the logged code.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import sys
from pathlib import Path

import torch

from rcc_model import RCCModel
from rcc_model.data.build import load_tokens
from rcc_model.evaluation.protocols import first_integer, needle_case, read_context

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "_common"))
from _report import write_report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("result", type=Path, help="a needle.json written by `rcc eval needle --read-slots`")
    parser.add_argument("--data", type=Path, required=True, help="the data folder the result was run on")
    parser.add_argument("--margins", type=float, nargs="+", required=True)
    parser.add_argument("--seed", type=int, default=0, help="the run's seed (`rcc eval`'s default: 0)")
    args = parser.parse_args()
    logged = json.loads(args.result.read_text())
    torch.set_grad_enabled(False)
    model = RCCModel.from_pretrained(logged["model"], rate=logged["rate"], dtype=logged["dtype"])
    model.config = dataclasses.replace(model.config, read_alignments=logged["read_alignments"])
    abstention, shipped = model.config.abstention, model.config
    haystack, rng = load_tokens(args.data, "heldout"), random.Random(args.seed)
    rows = []
    for cell in logged["cells"]:
        for answer in cell["answers"]:
            context, asked, expected, _ = needle_case(model, haystack, rng, cell["length"], cell["depth"],
                                                      logged["sentence"], logged["question"])
            if expected != answer["expected"]:
                raise ValueError(f"the replayed draw differs from the logged one ({expected} against "
                                 f"{answer['expected']}): another seed or data folder?")
            row = {"length": cell["length"], "depth": cell["depth"], "expected": expected,
                   "logged": answer["output"], "at": {}}
            if answer["output"].strip() == abstention:
                memory, prompt, _ = read_context(model, context, asked, logged["read_slots"])
                for margin in args.margins:
                    model.config = dataclasses.replace(shipped, abstention_margin=margin)
                    row["at"][str(margin)] = model.generate(memory, prompt, max_new_tokens=logged["answer_tokens"],
                                                            reading=None)
                model.config = shipped
                print(cell["length"], cell["depth"], expected, row["at"], flush=True)
            rows.append(row)

    def right(output: str, expected: str) -> bool:
        return (first_integer(output) or "") == expected

    table = [f"`{logged['model']}` at its logged margin ({logged['abstention_margin']}) and at others: the "
             f"{len(rows)} trials of `{args.result}`, {sum(bool(r['at']) for r in rows)} of them declined and "
             "asked again.", "", "| margin | codes read | declined |", "|---|---:|---:|",
             f"| {logged['abstention_margin']} (logged) | {sum(right(r['logged'], r['expected']) for r in rows)} "
             f"| {sum(bool(r['at']) for r in rows)} |"]
    for margin in map(str, args.margins):
        outputs = [r["at"].get(margin, r["logged"]) for r in rows]
        table.append(f"| {margin} | {sum(right(o, r['expected']) for o, r in zip(outputs, rows))} | "
                     f"{sum(o.strip() == abstention for o in outputs)} |")
    command = (f"python benchmarks/needle/declines_at_margins.py {args.result} --data {args.data} "
               f"--margins {' '.join(map(str, args.margins))}")
    write_report(args.result.parent / "at-other-margins", "A needle result at other abstention margins",
                 command, table, {"rows": rows})


if __name__ == "__main__":
    main()
