"""`rcc reconstruct FILE.rccmem`."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub) -> None:
    from rcc_model.cli import add_model_options

    p = sub.add_parser("reconstruct", help="regenerate the text a memory file holds",
                       description="Regenerate the text a memory file holds, window by window.")
    p.add_argument("memory", type=Path, help="memory file written by `rcc compress`")
    p.add_argument("--batch-size", type=int, default=8, help="windows decoded at once (default: 8)")
    p.add_argument("--no-repeat-ngram", type=int, default=0, metavar="N", help="never repeat an N-gram of "
                   "tokens a window's text already holds (default: 0, off)")
    p.add_argument("--beams", type=int, default=1, metavar="K", help="decode each window by beam search with K "
                   "hypotheses: slower, often closer to the text (default: 1, greedy)")
    p.add_argument("--verify", type=float, default=0.0, metavar="NATS", help="re-encode each block a hypothesis "
                   "writes and charge NATS per unit of distance from the memory (30 measured best at r = 8)")
    p.add_argument("--anchored", action="store_true", help="write the token the memory holds at each slot position")
    add_model_options(p)


def run(args: argparse.Namespace) -> int:
    from rcc_model import CompressedMemory
    from rcc_model.cli import load_model_for

    memory = CompressedMemory.load(args.memory)
    print(load_model_for(args, memory.rate).reconstruct(memory, batch_size=args.batch_size,
                                                              no_repeat_ngram_size=args.no_repeat_ngram,
                                                              num_beams=args.beams, verify=args.verify,
                                                              anchored=args.anchored))
    return 0
