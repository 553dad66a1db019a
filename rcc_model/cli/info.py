"""`rcc info FILE.rccmem|STORE`: what a memory file or a memory store holds, without loading a model."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser("info", help="show what a memory file or store holds",
                       description="Show a memory file's or a memory store's size, settings and the model that "
                       "made it.")
    p.add_argument("memory", type=Path, help="memory file or store folder written by `rcc compress`")
    p.add_argument("--json", action="store_true", help="print JSON")


def run(args: argparse.Namespace) -> int:
    from rcc_model import CompressedMemory
    from rcc_model.store import MemoryStore, is_store

    if args.memory.is_dir() or is_store(args.memory):
        _show(MemoryStore(args.memory).summary(), args.json)
        return 0
    memory = CompressedMemory.load(args.memory)
    facts = {
        "file": str(args.memory), "file_bytes": args.memory.stat().st_size, "tokens": memory.token_count,
        "slots": memory.num_slots, "windows": memory.num_windows, "rate": memory.rate,
        "window": memory.window, "padding": memory.padding, "entries": memory.states.shape[1],
        "hidden": memory.states.shape[2], "dtype": str(memory.dtype).removeprefix("torch."),
        "base": memory.base, "model": memory.fingerprint, "source_sha256": memory.source_hash,
        "window_texts": "kept" if memory.window_texts is not None else "not kept",
    }
    _show(facts, args.json)
    return 0


def _show(facts: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(facts, indent=2))
    else:
        width = max(map(len, facts))
        for key, value in facts.items():
            print(f"{key:<{width}}  {value}")
