"""Reconstruction decoded greedily, by beam search, and by beam search checked against the memory, side by side.

    python benchmarks/checked_decoding/checked_decoding.py --rate 8 --windows 8 --seed 2  # writes checked_decoding_r8.*

The windows are drawn with `--seed` from the held-out split: seed 2 shares no window with `rcc eval
reconstruction`'s seed 0, so settings chosen here are then measured on windows they were not chosen on.
Each variant runs `rcc_model.evaluation.protocols.reconstruction` on the same windows and is timed from the text
to the regenerated text (compression, decoding, and the teacher-forced losses the protocol also reports).
First, what `verify` rests on: the distance (`state_distance`) between a memory's slot and its block re-encoded
block by block through a KV cache, as `verify` does, for the true text and with one token of block 5 changed.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

from rcc_model import RCCModel
from rcc_model.beam_search import encode_block, state_distance
from rcc_model.data.build import load_tokens
from rcc_model.evaluation.protocols import reconstruction

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "_common"))
from _report import machine, write_report

HERE = Path(__file__).resolve().parent

# name -> protocols.reconstruction settings, every one given: those left out would be the model's own
VARIANTS = {
    "greedy": {"num_beams": 1, "verify": 0.0, "anchored": False},
    "greedy, anchored": {"num_beams": 1, "verify": 0.0, "anchored": True},
    "beams 2, verify 30, anchored": {"num_beams": 2, "verify": 30.0, "anchored": True},
    "beams 4, verify 30, anchored": {"num_beams": 4, "verify": 30.0, "anchored": True},
    "beams 8": {"num_beams": 8, "verify": 0.0, "anchored": False},
    "beams 8, anchored": {"num_beams": 8, "verify": 0.0, "anchored": True},
    "beams 8, verify 30": {"num_beams": 8, "verify": 30.0, "anchored": False},
    "beams 8, verify 30, anchored": {"num_beams": 8, "verify": 30.0, "anchored": True},
}


def slot_distances(model: RCCModel, ids: list[int], rate: int) -> dict[str, list[float]]:
    """For one window: every slot's distance with the true text encoded r tokens at a time through a KV cache,
    and block 5's with its first, middle or last token changed (to the next token id)."""
    import torch

    slots = model.compress(ids, rate=rate).states  # (S, K, H)
    found: dict[str, list[float]] = {}
    with torch.no_grad():
        cache, states = None, []
        for start in range(0, len(ids), rate):
            state, cache = encode_block(model, torch.tensor([ids[start:start + rate]]), cache)
            states.append(state)
        found["true text"] = state_distance(torch.cat(states), slots).tolist()
        end = 6 * rate  # block 5 is tokens [5r, 6r)
        for offset, name in ((0, "first"), (rate // 2, "middle"), (rate - 1, "last")):
            changed = ids[:end]
            changed[5 * rate + offset] = (changed[5 * rate + offset] + 1) % model.encoder.config.vocab_size
            state, _ = encode_block(model, torch.tensor([changed]))
            found[f"block 5, its {name} token changed"] = state_distance(state, slots[5:6]).tolist()
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--rate", type=int, default=8, help="the packaged default's weights for this rate")
    parser.add_argument("--data", type=Path, default=Path("data"), help="folder written by `rcc data build`")
    parser.add_argument("--windows", type=int, default=8)
    parser.add_argument("--seed", type=int, default=2)
    parser.add_argument("--only", nargs="+", choices=list(VARIANTS), help="run only these variants")
    parser.add_argument("--out", type=Path, help="report path without suffix (default: checked_decoding_rR)")
    args = parser.parse_args()

    import torch

    model = RCCModel.from_pretrained(args.model, rate=args.rate)
    tokens = load_tokens(args.data, "heldout")
    rng = random.Random(args.seed)  # the windows `reconstruction` draws with this seed
    starts = sorted(rng.randrange(0, len(tokens) - model.config.window) for _ in range(args.windows))
    distances: dict[str, list[float]] = {}
    for start in starts:
        ids = [int(t) for t in tokens[start:start + model.config.window]]
        for case, values in slot_distances(model, ids, args.rate).items():
            distances.setdefault(case, []).extend(values)
    rows = []
    for name in args.only or VARIANTS:
        start = time.perf_counter()
        result = reconstruction(model, tokens, windows=args.windows, seed=args.seed, **VARIANTS[name])
        seconds = time.perf_counter() - start
        rows.append({"variant": name, "settings": VARIANTS[name], "seconds_per_window": seconds / args.windows,
                     **{key: result[key] for key in ("bleu4", "sacrebleu", "exact_match", "token_accuracy")}})
        print(rows[-1], flush=True)
    body = [f"Model `{args.model}` at r = {args.rate}, {args.windows} held-out windows of {model.config.window} "
            f"tokens drawn with seed {args.seed}.", "",
            "| slot re-encoded | slots | mean distance | min | max |", "|---|---:|---:|---:|---:|"]
    body += [f"| {case} | {len(v)} | {sum(v) / len(v):.3f} | {min(v):.3f} | {max(v):.3f} |"
             for case, v in distances.items()]
    body += ["", "| decoding | corpus BLEU-4 | sacreBLEU | token accuracy | exact windows | s / window |",
             "|---|---:|---:|---:|---:|---:|"]
    body += [f"| {r['variant']} | {r['bleu4']:.3f} | {r['sacrebleu']:.1f} | {r['token_accuracy']:.3f} | "
             f"{r['exact_match']:.2f} | {r['seconds_per_window']:.1f} |" for r in rows]
    command = "python benchmarks/checked_decoding/checked_decoding.py " + " ".join(
        [f"--rate {args.rate}", f"--windows {args.windows}", f"--seed {args.seed}"]
        + ([f"--model {args.model}"] if args.model != "default" else [])
        + (["--only " + " ".join(f'"{v}"' for v in args.only)] if args.only else [])
        + ([f"--out {args.out}"] if args.out else []))
    write_report(args.out or HERE / f"checked_decoding_r{args.rate}", "Reconstruction: greedy, beams, and beams "
                 "checked against the memory", command, body, {"rows": rows, "slot_distances": distances},
                 machine(torch.get_num_threads()))


if __name__ == "__main__":
    main()
