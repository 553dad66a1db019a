"""`rcc reconstruct FILE.rccmem`."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub) -> None:
    from rcc_model.cli.checks import non_negative_int, positive_int
    from rcc_model.cli.options import add_model_options, add_search_options

    p = sub.add_parser("reconstruct", help="regenerate the text a memory file holds",
                       description="Regenerate the text a memory file holds, window by window, as the model's "
                       "settings say (the packaged default: beam search checked against the memory; --greedy: "
                       "faster, less faithful).")
    p.add_argument("memory", type=Path, help="memory file written by `rcc compress`")
    p.add_argument("--batch-size", type=positive_int, default=8, help="windows decoded at once (default: 8)")
    p.add_argument("--no-repeat-ngram", type=non_negative_int, default=0, metavar="N", help="never repeat an N-gram of "
                   "tokens a window's text already holds (default: 0, off)")
    add_search_options(p)
    add_model_options(p)


def run(args: argparse.Namespace) -> int:
    from rcc_model.cli.ask import load_memory
    from rcc_model.cli.options import load_model_for, search_options

    search = search_options(args)
    memory = load_memory(args.memory)
    model = load_model_for(args, memory.rate)
    print(model.reconstruct(memory, batch_size=args.batch_size, no_repeat_ngram_size=args.no_repeat_ngram,
                            progress=True, **search))  # the bar on stderr: a long memory takes minutes
    return 0
