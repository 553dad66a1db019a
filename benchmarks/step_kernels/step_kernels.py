"""Training step time by attention kernel and by which positions get full-vocabulary logits, on the same batches.

    python benchmarks/step_kernels/step_kernels.py --config configs/default_stage13.json --batches 5

`RCCModel.forward` asks the decoder for logits only where a label is scored (`logits_to_keep` as positions); it
used to take every prompt and target position (`logits_to_keep=T + 1`) and slice the logits afterwards, so the
LM head ran on a non-contiguous (B, T, H) slice, which torch multiplies as a batched product against a copy of
the (H, V) head per row, and a (B, T, V) logits tensor over 49,152 tokens is the step's largest. Training on
CUDA uses eager attention (sdpa's backward gave NaN there); on the CPU it keeps the base's sdpa, and eager is
measured beside it. Three modes run forward + backward (bf16 autocast, the config's trainable parameters) on
each batch, in an order that rotates from batch to batch, so they see the same examples and the same machine
load:

- all positions, sdpa: the training step before;
- scored positions, sdpa: the training step now;
- scored positions, eager.

Writes step_kernels.{md,json} next to this file.
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

MODES = ("all positions, sdpa", "scored positions, sdpa", "scored positions, eager")


def logits_at_every_position(model):
    """Patch `model.decode` back to the old cost: logits for the last T + 1 positions, the scored ones picked
    from them afterwards."""
    decode = model.decode

    def old_decode(slot_states, slot_mask, input_ids, attention_mask, *, logits_to_keep=0, **kwargs):
        tokens = input_ids.shape[1]
        out = decode(slot_states, slot_mask, input_ids, attention_mask, logits_to_keep=tokens + 1, **kwargs)
        out.logits = out.logits[:, logits_to_keep - (slot_states.shape[1] - 1)]  # slot P-1 is column 0
        return out

    return mock.patch.object(model, "decode", old_decode)


def main() -> None:
    from rcc_model.training.config import TrainConfig

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/default_stage13.json")
    parser.add_argument("--batches", type=int, default=5)
    args = parser.parse_args()
    config = TrainConfig.load(args.config)
    model, params = trainable_model(config)
    rows = []
    for i, batch in enumerate(heldout_batches(config, model, args.batches + 1)):  # the first warms up
        timings = {}
        for mode in MODES[i % 3:] + MODES[:i % 3]:
            for causal_lm in (model.encoder, model.decoder):
                causal_lm.set_attn_implementation(mode.split(", ")[1])
            patch = logits_at_every_position(model) if mode.startswith("all") else contextlib.nullcontext()
            with patch:
                timings[mode] = step_seconds(model, batch, params)
        scored = int((batch.labels != -100).sum())
        rows.append({"batch": i, "scored_tokens": scored, "input_tokens": int(batch.attention_mask.sum()),
                     "windows": len(batch.window_owner), **timings})
        print(rows[-1], flush=True)
    timed = rows[1:]
    means = {mode: statistics.mean(r[mode] for r in timed) for mode in MODES}
    command = f"python benchmarks/step_kernels/step_kernels.py --config {args.config} --batches {args.batches}"
    table = ["| batch | windows | prompt + target tokens | scored tokens | " + " | ".join(f"{m} (s)" for m in MODES)
             + " |", "|---:|---:|---:|---:|" + "---:|" * len(MODES)]
    table += [f"| {r['batch']} | {r['windows']} | {r['input_tokens']} | {r['scored_tokens']} | "
              + " | ".join(f"{r[m]:.1f}" for m in MODES) + " |" for r in timed]
    before = means[MODES[0]]
    table += ["", "Mean per batch: " + ", ".join(f"{m} {s:.1f} s ({before / s:.2f}x)" for m, s in means.items())
              + "."]
    write_report(HERE / "step_kernels",
                 "Training step by logits scope and attention kernel (forward + backward, bf16, this 2-core CPU)",
                 command, table, {"config": args.config, "rows": rows, "mean_s": means})


if __name__ == "__main__":
    main()
