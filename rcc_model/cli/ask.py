"""`rcc ask FILE.rccmem "question"`."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub) -> None:
    from rcc_model.cli import add_model_options

    p = sub.add_parser("ask", help="answer a question from a memory file",
                       description="Answer a question from a memory file, streaming the answer. Without a "
                       "question, the one compressed with the text (`compress --question`) is answered.")
    p.add_argument("memory", type=Path, help="memory file written by `rcc compress`")
    p.add_argument("question", nargs="?", help="the question (omit for instruction reconstruction)")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=None)
    add_model_options(p)


def run(args: argparse.Namespace) -> int:
    from rcc_model import CompressedMemory
    from rcc_model.cli import load_model_for

    memory = CompressedMemory.load(args.memory)
    model = load_model_for(args, memory.rate)
    sampling = dict(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p,
                    seed=args.seed)
    if args.question is None:
        print(model.ask(memory, None, **sampling))
        return 0
    for piece in model.stream(memory, [{"role": "user", "content": args.question}], **sampling):
        print(piece, end="", flush=True)
    print()
    return 0
