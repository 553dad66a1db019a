"""Training step time with the decoder's rows in length groups vs one padded call, on the same batches.

    python benchmarks/grouped_decode/grouped_decode.py --config configs/default_stage6.json --batches 6

A batch mixes one-window examples (64 slots at r = 4) with QA documents hidden in up to four windows of text
(`qa_haystack`, up to 256 slots), and whole-window reconstruction targets (256 tokens) with 120-token spans.
One decoder call pads every row to the most slots and the longest target; `RCCModel.forward` splits the rows
in two groups where that padding wastes the most. Both modes run forward + backward (bf16 autocast,
the config's trainable parameters) on each batch in turn, the first of the pair alternating, so they see the
same examples and the same machine load; writes grouped_decode.{md,json} next to this file.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
from pathlib import Path
from unittest import mock

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent / "_common"))
from _report import write_report  # noqa: E402
from _steps import heldout_batches, step_seconds, trainable_model  # noqa: E402


def main() -> None:
    from rcc_model import modeling
    from rcc_model.training.config import TrainConfig

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/default_stage6.json")
    parser.add_argument("--batches", type=int, default=6)
    args = parser.parse_args()
    config = TrainConfig.load(args.config)
    model, params = trainable_model(config)
    one_call = mock.patch.object(modeling, "_length_groups", lambda slots, tokens: [list(range(len(slots)))])
    rows = []
    for i, batch in enumerate(heldout_batches(config, model, args.batches + 1)):  # the first warms up
        timings = {}
        for mode in (("one call", "grouped") if i % 2 else ("grouped", "one call")):  # alternate who goes first
            with one_call if mode == "one call" else contextlib.nullcontext():
                timings[mode] = step_seconds(model, batch, params)
        padded, grouped = timings["one call"], timings["grouped"]
        windows = [batch.window_owner.count(r) for r in range(config.batch_size)]
        rows.append({"batch": i, "windows_per_example": windows, "one_call_s": padded, "grouped_s": grouped})
        print(rows[-1], flush=True)
    timed = rows[1:]
    one, two = statistics.mean(r["one_call_s"] for r in timed), statistics.mean(r["grouped_s"] for r in timed)
    command = f"python benchmarks/grouped_decode/grouped_decode.py --config {args.config} --batches {args.batches}"
    table = ["| batch | context windows per example | one call (s) | grouped (s) |", "|---:|---|---:|---:|"]
    table += [f"| {r['batch']} | {' '.join(map(str, r['windows_per_example']))} | {r['one_call_s']:.1f} | "
              f"{r['grouped_s']:.1f} |" for r in timed]
    table += ["", f"Mean: one call {one:.1f} s, grouped {two:.1f} s per batch ({one / two:.2f}x)."]
    write_report(HERE / "grouped_decode",
                 "Decoder rows in length groups vs one padded call (forward + backward, bf16, this 2-core CPU)",
                 command, table, {"rows": rows})


if __name__ == "__main__":
    main()
