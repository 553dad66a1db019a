"""`rcc info FILE.rccmem`: what a memory file holds, without loading a model."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser("info", help="show what a memory file holds",
                       description="Show a memory file's size, settings and the model that made it.")
    p.add_argument("memory", type=Path, help="memory file written by `rcc compress`")
    p.add_argument("--json", action="store_true", help="print JSON")


def run(args: argparse.Namespace) -> int:
    from rcc_model import CompressedMemory

    memory = CompressedMemory.load(args.memory)
    facts = {
        "file": str(args.memory), "file_bytes": args.memory.stat().st_size, "tokens": memory.token_count,
        "slots": memory.num_slots, "windows": memory.num_windows, "rate": memory.rate,
        "window": memory.window, "padding": memory.padding, "entries": memory.states.shape[1],
        "hidden": memory.states.shape[2], "dtype": str(memory.dtype).removeprefix("torch."),
        "base": memory.base, "model": memory.fingerprint, "source_sha256": memory.source_hash,
        "window_texts": "kept" if memory.window_texts is not None else "not kept",
    }
    if args.json:
        print(json.dumps(facts, indent=2))
    else:
        width = max(map(len, facts))
        for key, value in facts.items():
            print(f"{key:<{width}}  {value}")
    return 0
