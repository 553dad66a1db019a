"""Training throughput (compressed context tokens per second) of the recipe and its cheaper variants.

    python benchmarks/training_throughput/throughput.py --data data     # writes throughput.{md,json} next to this file

Each variant is the default recipe (configs/default.json, in bf16) with a few settings changed, trained for a few
steps by the real loop (`rcc_model.training.loop.train`) in a fresh process; the rate is measured between
the second step and the last, so model loading, the first evaluation, building a slot cache (once per
run) and warm-up are not counted.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent / "_common"))
from _child import report, run_child  # noqa: E402
from _report import machine, write_report  # noqa: E402

RECONSTRUCTION_ONLY = {"train_encoder": False, "objectives": {"reconstruction": 1.0}}
SPANS_64 = {**RECONSTRUCTION_ONLY, "span": 64, "whole_window_share": 0.0}
SPANS_64_CACHED_EAGER = {**SPANS_64, "slot_cache": 256, "attention": "eager"}
FASTEST = "frozen encoder, 64-token spans, reconstruction only, slot cache, eager attention"
# Not a training setting: puts back peft's cast of every adapter input to float32 (the loop skips it under bf16
# autocast, `rcc_model.adapters.skip_input_casts`), to measure what skipping it saves.
PEFT_CASTS = {"peft_input_casts": True}

VARIANTS = {
    "naive fp32 loop (recipe, fp32)": {"precision": "no"},
    "recipe: bridges + LoRA enc/dec, encoder trained, bf16": {},
    "recipe with eager attention (as training on CUDA uses)": {"attention": "eager"},
    "frozen encoder (no encoder gradients), bf16": {"train_encoder": False},
    "frozen encoder, reconstruction only": RECONSTRUCTION_ONLY,
    "frozen encoder, reconstruction only, slot cache (no encoder pass)": {**RECONSTRUCTION_ONLY, "slot_cache": 256},
    "frozen encoder, 64-token spans, reconstruction only": SPANS_64,
    "frozen encoder, 64-token spans, reconstruction only, slot cache": {**SPANS_64, "slot_cache": 256},
    FASTEST: SPANS_64_CACHED_EAGER,
    "recipe, compiled blocks": {"compile": True},
    f"{FASTEST}, compiled blocks": {**SPANS_64_CACHED_EAGER, "compile": True},
    "recipe, adapter inputs cast to float32 (peft's default)": PEFT_CASTS,
    f"{FASTEST}, adapter inputs cast to float32": {**SPANS_64_CACHED_EAGER, **PEFT_CASTS},
}
# r = 8, as the packaged `r8/` weights are trained: half the slots per context token for the decoder to read
VARIANTS["naive fp32 loop (recipe, fp32), r = 8"] = {"precision": "no", "rate": 8}
VARIANTS[f"{FASTEST}, r = 8"] = {**SPANS_64_CACHED_EAGER, "rate": 8}
# float32 throughout: what a CPU without bfloat16 matrix instructions trains with (`"precision": "auto"` there)
VARIANTS[f"{FASTEST}, fp32"] = {**SPANS_64_CACHED_EAGER, "precision": "no"}
for batch in (16, 32):  # larger batches spread each operator's fixed cost over more rows
    VARIANTS[f"{FASTEST}, batch {batch}"] = {**SPANS_64_CACHED_EAGER, "batch_size": batch}
    VARIANTS[f"{FASTEST}, batch {batch}, compiled blocks"] = {**SPANS_64_CACHED_EAGER, "batch_size": batch,
                                                              "compile": True}


def measure(name: str, data: str, steps: int) -> dict:
    from rcc_model.training import loop
    from rcc_model.training.config import TrainConfig

    settings = json.loads((HERE.parents[1] / "configs" / "default.json").read_text())
    settings["precision"] = "bf16"  # as the variants' names say, unless one sets its own
    settings.update(VARIANTS[name])
    if settings.pop("peft_input_casts", False):
        loop.skip_input_casts = lambda model: None
    with tempfile.TemporaryDirectory() as out:
        settings.update({"data": str(Path(data).resolve()), "out": out, "steps": steps, "log_every": 1,
                         "eval_batches": 1, "eval_every": 10**6, "save_every": 10**6})
        config = TrainConfig(**settings)
        loop.train(config)
        records = [json.loads(line) for line in (Path(out) / "log.jsonl").read_text().splitlines()]
    rows = [r for r in records if r["event"] == "train"]
    first, last = rows[1], rows[-1]
    tokens = last["context_tokens_per_s"] * last["elapsed_s"] - first["context_tokens_per_s"] * first["elapsed_s"]
    seconds = last["elapsed_s"] - first["elapsed_s"]
    return {"variant": name, "settings": VARIANTS[name], "steps_timed": last["step"] - first["step"],
            "context_tokens_per_s": tokens / seconds, "seconds_per_step": seconds / (last["step"] - first["step"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="data", help="folder written by `rcc data build`")
    parser.add_argument("--steps", type=int, default=8, help="the rate is timed from step 2 to the last")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="measure only these variants, by exact name, "
                        "the first as the baseline (written to --out)")
    parser.add_argument("--out", type=Path, default=HERE / "throughput", help="report path, without suffix")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        report(measure(args.child, args.data, args.steps))
        return
    unknown = sorted(set(args.only or ()) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {list(VARIANTS)}")
    rows = []
    for name in args.only or VARIANTS:
        rows.append(run_child(__file__, "--child", name, "--data", args.data, "--steps", str(args.steps)))
        print(rows[-1], flush=True)
    baseline = rows[0]["context_tokens_per_s"]
    command = f"python benchmarks/training_throughput/throughput.py --data {args.data} --steps {args.steps}"
    if args.only:
        command += " --only " + " ".join(f'"{name}"' for name in args.only) + f" --out {args.out}"
    table = [f"| variant | context tokens/s | s/step | vs {rows[0]['variant']} |", "|---|---:|---:|---:|"]
    table += [f"| {r['variant']} | {r['context_tokens_per_s']:.0f} | {r['seconds_per_step']:.1f} | "
              f"{r['context_tokens_per_s'] / baseline:.2f}x |" for r in rows]
    write_report(args.out,
                 "Training throughput, SmolLM2-135M RCC (r = 4, W = 256, batch 8 and bf16 unless named), 2-core CPU",
                 command, table, {"rows": rows}, measured_on=machine(torch.get_num_threads()))


if __name__ == "__main__":
    main()
