"""Whether the memory tells a code's digit orders apart: the slot states of a window with its code reordered.

    python benchmarks/slot_orders/slot_orders.py --rate 8   # writes slot_orders_r8.{md,json}

At r = 8 the decoder writes most needle codes with the right digits in the wrong order (`MODEL_CARD.md`), and
its own likelihood prefers the wrong order (`benchmarks/answer_orders/answer_orders.py`). This asks the encoder side: on
held-out windows each holding the needle's sentence (`reconstructed_codes.planted_windows`), the window is
compressed again with the code's digits reordered, every other token the same, and the slot that closes the
code's last digit is compared with the original's (`beam_search.state_distance`, the relative distance `verify`
weighs). The floor is the same window compressed in another batch (bfloat16 noise; `verify` re-encodes block
by block and sees 0.007-0.016 for the right text); the ceiling another random code in its place. Reorderings
far above the noise mean the memory keeps the order and the decoder does not read it; near the noise, that the
encoder loses it.
"""

from __future__ import annotations

import argparse
import itertools
import random
import statistics
import sys
import time
from pathlib import Path

from rcc_model import RCCModel
from rcc_model.beam_search import state_distance
from rcc_model.data.build import load_tokens

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "_common"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "reconstructed_codes"))
from _report import machine, write_report
from reconstructed_codes import planted_windows

HERE = Path(__file__).resolve().parent
CLOSE = 0.02  # above the noise of re-encoding the right text (`benchmarks/checked_decoding/README.md`)


def code_span(model: RCCModel, ids: list[int], code: str) -> tuple[int, int] | None:
    """Where the code's digit tokens sit in `ids`: [start, end), or None if they are not tokens of their own."""
    digits = [model.encode_text(d) for d in code]
    if any(len(d) != 1 for d in digits):
        return None
    digits = [d[0] for d in digits]
    for start in range(len(ids) - len(digits) + 1):
        if ids[start:start + len(digits)] == digits:
            return start, start + len(digits)
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--rate", type=int, default=8, help="the packaged default's weights for this rate")
    parser.add_argument("--data", type=Path, default=Path("data"), help="folder written by `rcc data build`")
    parser.add_argument("--windows", type=int, default=24)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--orders", type=int, default=8, help="reorderings of each code compared")
    parser.add_argument("--out", type=Path, help="report path without suffix (default: slot_orders_rR)")
    args = parser.parse_args()

    import torch

    model = RCCModel.from_pretrained(args.model, rate=args.rate)
    rate, rng = model.config.rate, random.Random(args.seed)
    rows, start = [], time.perf_counter()
    for ids, code in planted_windows(model, load_tokens(args.data, "heldout"), args.windows, args.seed):
        span = code_span(model, ids, code)
        if span is None:
            raise SystemExit(f"the tokenizer does not write {code} one digit per token: this measure needs it")
        orders = sorted({"".join(p) for p in itertools.permutations(code)} - {code})
        orders = rng.sample(orders, min(args.orders, len(orders)))
        other = str(rng.randint(10000, 99999))
        variants = [ids[:span[0]] + model.encode_text(o) + ids[span[1]:] for o in [*orders, other]]
        memories = model.compress([ids, *variants])  # the original in a batch with its variants
        alone = model.compress(ids)  # and in a batch of its own: what bfloat16 noise moves
        slot = (span[1] - 1) // rate  # the first slot whose block holds the code's last digit
        reference = memories[0].states[slot:slot + 1]

        def distance(memory, reference=reference, slot=slot) -> float:
            return float(state_distance(memory.states[slot:slot + 1], reference))

        reordered = [distance(m) for m in memories[1:-1]]
        rows.append({"code": code, "slot": slot, "last_digit_in_block": (span[1] - 1) % rate + 1,
                     "noise": distance(alone), "reordered": dict(zip(orders, reordered)),
                     "reordered_min": min(reordered), "reordered_median": statistics.median(reordered),
                     "other_code": other, "other_code_distance": distance(memories[-1])})
        print({k: v for k, v in rows[-1].items() if k != "reordered"}, flush=True)
    seconds = time.perf_counter() - start
    noise = max(r["noise"] for r in rows)
    body = [f"Model `{args.model}` at r = {args.rate}: {len(rows)} windows of {model.config.window} held-out tokens "
            f"(seed {args.seed}), each holding the needle's sentence with a random 5-digit code; {args.orders} "
            f"reorderings of each code; {seconds / 60:.1f} minutes. Distances are those of the slot whose block "
            "holds the code's last digit (relative L2, averaged over its embedding and every layer).", "",
            "| measure | value |", "|---|---:|",
            f"| bfloat16 noise (the same window in another batch), largest | {noise:.4f} |",
            f"| a reordering, smallest over all windows | {min(r['reordered_min'] for r in rows):.4f} |",
            f"| a reordering, median of the windows' medians | "
            f"{statistics.median(r['reordered_median'] for r in rows):.4f} |",
            f"| another random code, median | {statistics.median(r['other_code_distance'] for r in rows):.4f} |",
            f"| reorderings closer than {CLOSE} (re-encoding block by block, as `verify` does, moves the right "
            f"text 0.007-0.016) | {sum(d < CLOSE for r in rows for d in r['reordered'].values())}"
            f"/{sum(len(r['reordered']) for r in rows)} |",
            "", "| code | slot | its last digit at block position | noise | reordered: smallest | median | "
            "another code |", "|---|---:|---:|---:|---:|---:|---:|"]
    body += [f"| {r['code']} | {r['slot']} | {r['last_digit_in_block']} of {rate} | {r['noise']:.4f} | "
             f"{r['reordered_min']:.4f} | {r['reordered_median']:.4f} | {r['other_code_distance']:.4f} |" for r in rows]
    command = "python benchmarks/slot_orders/slot_orders.py " + " ".join(
        [f"--rate {args.rate}"] + ([f"--model {args.model}"] if args.model != "default" else [])
        + ([f"--windows {args.windows}"] if args.windows != 24 else [])
        + ([f"--seed {args.seed}"] if args.seed != 1 else [])
        + ([f"--orders {args.orders}"] if args.orders != 8 else [])
        + ([f"--out {args.out}"] if args.out else []))
    write_report(args.out or HERE / f"slot_orders_r{args.rate}", "Does the memory tell a code's digit orders "
                 "apart?", command, body, {"rows": rows}, machine(torch.get_num_threads()))


if __name__ == "__main__":
    main()
