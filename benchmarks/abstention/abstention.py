"""Where to set a model's `abstention_margin`: how much likelier its abstention is than its best other answer,
measured on generated QA that no evaluation reads.

    python benchmarks/abstention/abstention.py --model default --data data --rows 100 300  # -> abstention.{json,md}
    python benchmarks/abstention/abstention.py --model default --rate 8 --abstention "The document does not say." \
        --data data --rows 100 300 --out benchmarks/abstention/r8  # a rate's own weights; an abstention to try

`rcc eval qa` reads the first 50 rows of a data folder's held-out QA at most, so rows from 100 on are a
validation split: the margin is chosen here and the evaluations measure it. Each row is compressed whole and
answered greedily as `RCCModel.generate` answers (one alignment); where the answer is the abstention,
`generation.abstention_gap` scores it against the best answer that does not begin with it. The table gives,
for each margin, what `generate` would then answer: the abstention is kept where its gap is above the margin.
A margin below every gap on the unanswerable questions loses none of them: the packaged weights' margin is half
the smallest one over this command's rows and `--data data-open --rows 100 200` (`benchmarks/abstention/README.md`).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np
import torch

from rcc_model import RCCModel
from rcc_model.abstention import abstention_gap, greedy_answer_stands
from rcc_model.data.build import load_qa
from rcc_model.data.qa import NOT_IN_DOCUMENT
from rcc_model.evaluation.metrics import token_f1

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "_common"))
from _report import write_report

DEFAULT_OUT = Path(__file__).with_name("abstention")


def measure(model: RCCModel, examples, max_new_tokens: int) -> list[dict]:
    rows = []
    for example in examples:
        prompt = [{"role": "user", "content": example.question}]
        state = model.prefill_prompt(model.compress(example.context), prompt)
        greedy = model.generate(state, None, max_new_tokens=max_new_tokens)
        weighed = abstention_gap(model, state, max_new_tokens)
        row = {"question": example.question, "reference": example.answer,
               "unanswerable": example.answer == NOT_IN_DOCUMENT, "greedy": greedy,
               "gap": None if weighed is None else weighed.gap,
               "other": None if weighed is None else model.tokenizer.decode(weighed.other, skip_special_tokens=True)}
        rows.append(row)
        print({k: row[k] for k in ("reference", "greedy", "gap", "other")}, flush=True)
    return rows


def answer_at(row: dict, abstention: str, margin: float | None) -> str:
    """What `generate` answers with `abstention_margin` = margin (None: plain greedy), by
    `generation.weigh_abstention`'s own rule."""
    return row["greedy"] if greedy_answer_stands(abstention, margin, row["gap"], row["other"] or "") else row["other"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--rate", type=int, help="the checkpoint's weights for this rate (default: its own rate)")
    parser.add_argument("--abstention", help="the abstention to weigh (default: the model's own)")
    parser.add_argument("--data", type=Path, default=Path("data"))
    parser.add_argument("--rows", type=int, nargs=2, default=[100, 300], metavar=("FROM", "TO"))
    parser.add_argument("--margins", type=float, nargs="+", default=[0, 0.5, 1, 2, 3, 4])
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    model = RCCModel.from_pretrained(args.model, rate=args.rate)
    abstention = args.abstention or model.config.abstention
    if abstention is None:
        raise SystemExit(f"{args.model} has no `abstention` in its config: pass --abstention")
    model.config = dataclasses.replace(model.config, abstention=abstention,
                                       abstention_margin=None)  # plain greedy: gaps measured apart
    rows = measure(model, load_qa(args.data, "heldout")[args.rows[0]:args.rows[1]], args.max_new_tokens)

    unanswerable = [r for r in rows if r["unanswerable"]]
    answerable = [r for r in rows if not r["unanswerable"]]
    dtype = str(model.decoder.dtype).removeprefix("torch.")
    body = [f"Model `{args.model}` at r = {model.config.rate} in {dtype}, abstention \"{abstention}\"; "
            f"rows {args.rows[0]}-{args.rows[1]} of `{args.data}`'s held-out QA: "
            f"{len(answerable)} answerable, {len(unanswerable)} not (reference \"{NOT_IN_DOCUMENT}\").", "",
            "| margin (nats) | exact, answerable | exact, unanswerable | token F1, all | abstentions |",
            "|---|---:|---:|---:|---:|"]
    table = []
    for margin in [None, *args.margins]:
        exact = {name: sum(answer_at(r, abstention, margin).strip() == r["reference"] for r in part)
                 for name, part in (("answerable", answerable), ("unanswerable", unanswerable))}
        f1 = float(np.mean([token_f1(answer_at(r, abstention, margin), r["reference"]) for r in rows]))
        abstained = sum(answer_at(r, abstention, margin).strip() == abstention for r in rows)
        table.append({"margin": margin, **exact, "f1": f1, "abstentions": abstained})
        body.append(f"| {'greedy' if margin is None else margin} | {exact['answerable']} / {len(answerable)} | "
                    f"{exact['unanswerable']} / {len(unanswerable)} | {f1:.3f} | {abstained} |")
    gaps = {name: sorted(round(r["gap"], 2) for r in part if r["gap"] is not None)
            for name, part in (("unanswerable", unanswerable), ("answerable", answerable))}
    body += ["", "Gaps where greedy decoding abstains (nats; the abstention is kept where the gap is above the "
             "margin):", "", f"- unanswerable questions: {gaps['unanswerable']}",
             f"- answerable questions: {gaps['answerable']}"]
    command = (f"python benchmarks/abstention/abstention.py --model {args.model} --data {args.data} "
               f"--rows {args.rows[0]} {args.rows[1]} --margins {' '.join(str(m) for m in args.margins)}"
               + (f" --rate {args.rate}" if args.rate else "")
               + (f' --abstention "{args.abstention}"' if args.abstention else "")
               + ("" if args.out == DEFAULT_OUT else f" --out {args.out}"))
    title = "The abstention margin: how far the abstention leads where greedy decoding abstains"
    write_report(args.out, title, command, body, {"table": table, "gaps": gaps, "rows": rows})


if __name__ == "__main__":
    main()
