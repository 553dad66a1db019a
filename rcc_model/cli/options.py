"""Options and helpers the `rcc` subcommands share: which model to load, how reconstruction decodes."""

from __future__ import annotations

import argparse

from rcc_model.cli.checks import non_negative_float, positive_int


def add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="default",
                        help="packaged model name or checkpoint folder (default: %(default)s)")
    parser.add_argument("--device", default=None, help="cpu, cuda, mps (default: best available)")
    parser.add_argument("--dtype", default=None, choices=["auto", "float32", "bfloat16", "float16"],
                        help="compute dtype (default: the checkpoint's)")


def load_model(args: argparse.Namespace, rate: int | None = None):
    from rcc_model import RCCModel

    return RCCModel.from_pretrained(args.model, dtype=args.dtype, device=args.device, rate=rate)


def load_model_for(args: argparse.Namespace, rate: int | None):
    """The model that serves `rate`: its weights for that rate where it was trained at it (weights of their own,
    if it has them); else its default weights, which refuse a rate they were never trained at when used."""
    from rcc_model.checkpoint import own_rates

    return load_model(args, rate if rate in own_rates(args.model) else None)


def add_search_options(parser: argparse.ArgumentParser, scope: str = "") -> None:
    """How reconstruction decodes each window; left out, the model's own settings (`RCCConfig.reconstruct_*`).
    `scope` prefixes each help text (e.g. "reconstruction: ")."""
    parser.add_argument("--beams", type=positive_int, default=None, metavar="K",
                        help=f"{scope}decode each window by beam "
                        "search with K hypotheses (default: the model's; the packaged default's 8)")
    parser.add_argument("--verify", type=non_negative_float, default=None, metavar="NATS",
                        help=f"{scope}re-encode each block a "
                        "hypothesis writes and charge NATS per unit of distance from the memory's slot (default: the "
                        "model's; the packaged default's 30)")
    parser.add_argument("--anchored", action=argparse.BooleanOptionalAction, default=None, help=f"{scope}write the "
                        "token the memory holds at each slot position (default: the model's; the packaged default "
                        "does)")
    parser.add_argument("--greedy", action="store_true", help=f"{scope}plain greedy decoding, several times faster: "
                        "--beams 1 --verify 0 --no-anchored")


def search_options(args: argparse.Namespace) -> dict:
    """`num_beams`, `verify`, `anchored` as given (None: the model's own), `--greedy` spelt out."""
    given = {"num_beams": args.beams, "verify": args.verify, "anchored": args.anchored}
    if not args.greedy:
        return given
    if any(value is not None for value in given.values()):
        raise ValueError("--greedy is --beams 1 --verify 0 --no-anchored: give it alone")
    from rcc_model.beam_search import GREEDY

    return dict(GREEDY)


def refuse_unused_search(args: argparse.Namespace, why: str) -> None:
    """Refuse search options (`add_search_options`) given where nothing is decoded by them; `why` says what
    they need (e.g. "they need --from-reconstruction")."""
    given = [flag for flag, value in (("--beams", args.beams), ("--verify", args.verify),
                                      ("--anchored/--no-anchored", args.anchored), ("--greedy", args.greedy or None))
             if value is not None]
    if given:
        raise ValueError(f"{', '.join(given)} decode{'s' if len(given) == 1 else ''} reconstructed text, which this "
                         f"command does not do here: {why}")


RANKINGS = ("read", "greedy", "anchored-greedy")


def add_rank_option(parser: argparse.ArgumentParser) -> None:
    """How `--from-reconstruction` ranks the windows of a memory larger than it reads (`reconstruction_prompt`)."""
    parser.add_argument("--rank", choices=RANKINGS, default="read", help="--from-reconstruction beyond the slots "
                        "read: rank the windows on the reconstructions read (read, the default), or on a cheaper "
                        "greedy pass (greedy; anchored-greedy writes the token each slot holds), decoding only the "
                        "windows read with the search settings")


def reconstruction_options(args: argparse.Namespace) -> dict | None:
    """With `--from-reconstruction`, `rcc_model.reconstruction_prompt`'s settings: the search
    (`search_options`) and the ranking (`--rank`); else None."""
    from rcc_model.beam_search import ANCHORED_GREEDY, GREEDY

    if not args.from_reconstruction:
        if args.rank != "read":
            raise ValueError("--rank ranks reconstructed windows: it needs --from-reconstruction")
        return None
    rank = {"read": None, "greedy": GREEDY, "anchored-greedy": ANCHORED_GREEDY}[args.rank]
    return {**search_options(args), "rank": rank}
