"""Whether a 5-digit code survives the reconstruction of the window that holds it, per search setting.

    python benchmarks/reconstructed_codes/reconstructed_codes.py --windows 24 --seed 1  # -> reconstructed_codes_r4.*

Answers read from the reconstruction (`rcc eval needle --from-reconstruction`) are lost when the decoder writes
the code wrong in the window it found: on a needle drawn with seed 1 (not the reported grid's seed 0), the
default search (8 beams) wrote "95405." as "9540.5.", four digits and a stop, a text the decoder alone finds
likelier than the true one; with 16 beams the true one survived until the block check (`verify`) weighed it,
and was written. This measures that per setting on windows built like the needle protocol's: held-out
text (drawn with `--seed`) with `NEEDLE_SENTENCE` placed at a random token inside one window, never cut by
its edge. Each variant reconstructs the same windows, batched as `rcc_model.reconstruct_windows` does, timed.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

from rcc_model import RCCModel, reconstruct_windows
from rcc_model.data.build import load_tokens
from rcc_model.evaluation import metrics
from rcc_model.evaluation.protocols import NEEDLE_SENTENCE, first_integer
from rcc_model.memory import CompressedMemory

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "_common"))
from _report import machine, write_report

HERE = Path(__file__).resolve().parent
LEAD = " ".join(NEEDLE_SENTENCE.split("{code}")[0].split()[-2:])  # "archive is": the words the code follows

# name -> reconstruct_windows settings, every one given: those left out would be the model's own
VARIANTS = {
    "greedy, anchored": {"num_beams": 1, "verify": 0.0, "anchored": True},
    "beams 8, verify 30, anchored": {"num_beams": 8, "verify": 30.0, "anchored": True},
    "beams 16, verify 30, anchored": {"num_beams": 16, "verify": 30.0, "anchored": True},
}


def planted_windows(model: RCCModel, tokens, count: int, seed: int) -> list[tuple[list[int], str]]:
    """`count` one-window texts (token ids) of held-out text with the needle sentence inside, and each code."""
    rng = random.Random(seed)
    cases = []
    for _ in range(count):
        code = str(rng.randint(10000, 99999))
        hidden = model.encode_text(f" {NEEDLE_SENTENCE.format(code=code)} ")
        start = rng.randrange(0, len(tokens) - model.config.window)
        body = [int(t) for t in tokens[start:start + model.config.window - len(hidden)]]
        cut = rng.randrange(0, len(body) + 1)
        cases.append((body[:cut] + hidden + body[cut:], code))
    return cases


def code_written(text: str, code: str) -> tuple[bool, bool, float]:
    """(the code is in the text, the words before it are, share of the code's digits in place after them)."""
    at = text.find(LEAD)
    said = (first_integer(text[at + len(LEAD):]) or "") if at >= 0 else ""
    return code in text, at >= 0, metrics.digits_in_place(said, code)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--rate", type=int, default=4, help="the packaged default's weights for this rate")
    parser.add_argument("--data", type=Path, default=Path("data"), help="folder written by `rcc data build`")
    parser.add_argument("--windows", type=int, default=24)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--only", nargs="+", choices=list(VARIANTS), help="run only these variants")
    parser.add_argument("--out", type=Path, help="report path without suffix (default: reconstructed_codes_rR)")
    args = parser.parse_args()

    import torch

    model = RCCModel.from_pretrained(args.model, rate=args.rate)
    cases = planted_windows(model, load_tokens(args.data, "heldout"), args.windows, args.seed)
    memory = CompressedMemory.concat([model.compress(ids) for ids, _ in cases])
    if memory.num_windows != len(cases):
        raise SystemExit(f"each planted text must be one window: {len(cases)} texts made {memory.num_windows}")
    rows = []
    for name in args.only or VARIANTS:
        start = time.perf_counter()
        texts = [model.tokenizer.decode(ids, skip_special_tokens=True)
                 for ids in reconstruct_windows(model, memory, **VARIANTS[name])]
        seconds = time.perf_counter() - start
        found = [code_written(text, code) for text, (_, code) in zip(texts, cases)]
        rows.append({"variant": name, "settings": VARIANTS[name], "seconds_per_window": seconds / len(cases),
                     "codes": sum(f[0] for f in found), "leads": sum(f[1] for f in found),
                     "digits_in_place": sum(f[2] for f in found) / len(cases),
                     "missed": [{"code": code, "written": text[max(0, text.find(LEAD)):][:40]}
                                for text, (_, code), f in zip(texts, cases, found) if not f[0]]})
        print({k: v for k, v in rows[-1].items() if k != "missed"}, flush=True)
    body = [f"Model `{args.model}` at r = {args.rate}: {len(cases)} windows of {model.config.window} held-out "
            f"tokens (seed {args.seed}), each holding \"{NEEDLE_SENTENCE}\" with a random 5-digit code.", "",
            f"| decoding | code exact | \"{LEAD}\" kept | code digits in place after it | s / window |",
            "|---|---:|---:|---:|---:|"]
    body += [f"| {r['variant']} | {r['codes']}/{len(cases)} | {r['leads']}/{len(cases)} | "
             f"{r['digits_in_place']:.0%} | {r['seconds_per_window']:.1f} |" for r in rows]
    body += ["", f"Codes missed (what the reconstruction wrote from \"{LEAD}\", where it kept that much):", ""]
    body += [f"- {r['variant']}: " + "; ".join(f"{m['code']} -> {m['written']!r}" for m in r["missed"])
             for r in rows]
    command = "python benchmarks/reconstructed_codes/reconstructed_codes.py " + " ".join(
        [f"--windows {args.windows}", f"--seed {args.seed}"]
        + ([f"--rate {args.rate}"] if args.rate != 4 else [])
        + ([f"--model {args.model}"] if args.model != "default" else [])
        + (["--only " + " ".join(f'"{v}"' for v in args.only)] if args.only else [])
        + ([f"--out {args.out}"] if args.out else []))
    write_report(args.out or HERE / f"reconstructed_codes_r{args.rate}", "A code through the reconstruction of "
                 "its window, per search setting", command, body, {"rows": rows}, machine(torch.get_num_threads()))


if __name__ == "__main__":
    main()
