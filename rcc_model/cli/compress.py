"""`rcc compress FILE -o FILE.rccmem`."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub) -> None:
    from rcc_model.cli.options import add_model_options

    p = sub.add_parser("compress", help="compress a text file into a memory file",
                       description="Compress a UTF-8 text file into an RCC memory file (safetensors).")
    p.add_argument("file", type=Path, help="text file to compress ('-' for standard input)")
    p.add_argument("-o", "--output", type=Path, help="memory file to write (default: FILE.rccmem)")
    p.add_argument("--question", help="compress this question with the text (instruction reconstruction)")
    p.add_argument("--rate", type=int, help="compression rate, one the model was trained at (default: its "
                   "own); a model with weights of their own for that rate loads them")
    p.add_argument("--batch-size", type=int, default=8, help="windows per encoder batch (default: 8)")
    p.add_argument("--storage", choices=["bfloat16", "float16", "float32", "int8"],
                   help="dtype of the stored states (default: the model's memory dtype)")
    p.add_argument("--keep-text", action="store_true", help="store each window's text in the file too, so that "
                   "`rcc ask` reads the windows that best match a question when the memory is larger than the "
                   "model reads well (the file then holds the text)")
    add_model_options(p)


def run(args: argparse.Namespace) -> int:
    import sys

    from rcc_model.cli.options import load_model_for

    text = sys.stdin.read() if str(args.file) == "-" else args.file.read_text(encoding="utf-8")
    if args.question:
        text = f"{text}\n\n{args.question}"
    output = args.output or Path(f"{args.file}.rccmem" if str(args.file) != "-" else "stdin.rccmem")
    model = load_model_for(args, args.rate)
    memory = model.compress(text, batch_size=args.batch_size, progress=True, rate=args.rate, keep_text=args.keep_text)
    memory.save(output, dtype=args.storage)
    print(f"{output}: {memory.token_count} tokens -> {memory.num_slots} slots "
          f"({output.stat().st_size / 1e6:.1f} MB), model {memory.fingerprint}")
    return 0
