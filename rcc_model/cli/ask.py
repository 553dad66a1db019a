"""`rcc ask FILE.rccmem "question"`."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub) -> None:
    from rcc_model.cli.checks import non_negative_float, non_negative_int, positive_int, top_p
    from rcc_model.cli.options import add_model_options, add_rank_option, add_search_options

    p = sub.add_parser("ask", help="answer a question from a memory file",
                       description="Answer a question from a memory file, streaming the answer. Without a "
                       "question, the one compressed with the text (`compress --question`) is answered. A memory "
                       "larger than the model reads well (its read_slots) that keeps its text (`compress "
                       "--keep-text`) is read through the windows that best match the question, as the "
                       "integrations read it. With --from-reconstruction, the decoder answers from the text it "
                       "reconstructs from the memory instead (slower; answers open questions far better).")
    p.add_argument("memory", type=Path, help="memory file written by `rcc compress`")
    p.add_argument("question", nargs="?", help="the question (omit for instruction reconstruction)")
    p.add_argument("--max-new-tokens", type=positive_int, default=256, help="stop the answer after this many tokens "
                   "(default: %(default)s)")
    p.add_argument("--temperature", type=non_negative_float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--top-p", type=top_p, default=1.0, help="with --temperature > 0, sample from the smallest set "
                   "of tokens holding this much probability (default: %(default)s, all)")
    p.add_argument("--seed", type=int, default=None, help="random seed for sampling, so that a sampled answer "
                   "repeats (default: none)")
    p.add_argument("--read-slots", type=positive_int,
                   help="read at most this many slots' worth of the memory, the windows "
                   "that best match the question (default: the model's read_slots)")
    p.add_argument("--expand-tokens", type=non_negative_int,
                   help="read up to this many tokens of the best-matching windows as text, before the question "
                   "(default: the model's expand_tokens; 0 = slots only)")
    p.add_argument("--from-reconstruction", action="store_true", help="answer from the memory's reconstructed "
                   "text, read by the decoder without memory (RCCModel.ask_from_reconstruction); windows ranked "
                   "by their reconstruction, so the memory needs no kept text")
    add_search_options(p, "--from-reconstruction: ")
    add_rank_option(p)
    add_model_options(p)


def run(args: argparse.Namespace) -> int:
    import sys

    from rcc_model import GenerationInfo, ReadingPolicy, reconstruction_prompt
    from rcc_model.cli.options import load_model_for, reconstruction_options

    _check(args)
    reconstructed = reconstruction_options(args)  # flags checked before anything is read
    memory = load_memory(args.memory)
    model = load_model_for(args, memory.rate)
    sampling = dict(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p,
                    seed=args.seed)
    if args.question is None:
        print(model.ask(memory, None, **sampling))
        return 0
    prompt, info = [{"role": "user", "content": args.question}], GenerationInfo()
    if reconstructed is not None:
        budget = args.read_slots or model.config.read_slots
        prompt, reading = reconstruction_prompt(model, memory, prompt, budget, **reconstructed, progress=True)
        print(f"reading the reconstruction of {reading.windows_read} of {reading.windows_held} windows",
              file=sys.stderr)
        memory = model.empty_memory()
        pieces = model.stream(memory, prompt, reading=None, info=info, **sampling)
    else:
        policy = ReadingPolicy(expand_tokens=args.expand_tokens, read_slots=args.read_slots)
        pieces = model.stream(memory, prompt, reading=policy, info=info, **sampling)
    for piece in pieces:
        print(piece, end="", flush=True)
    print()
    _say_what_was_read(info)  # the reconstruction's reading was said before the answer
    return 0


def _check(args: argparse.Namespace) -> None:
    """Refuse flags that would do nothing here, before anything loads."""
    from rcc_model.cli.options import refuse_unused_search

    if args.question is not None and not args.question.strip():
        raise ValueError("the question is empty: ask something, or leave it out to answer the question "
                         "compressed with the text (compress --question)")
    if args.question is None:
        unused = [flag for flag, given in (("--from-reconstruction", args.from_reconstruction),
                                           ("--read-slots", args.read_slots is not None),
                                           ("--expand-tokens", args.expand_tokens is not None)) if given]
        if unused:
            raise ValueError(f"{', '.join(unused)} read the memory for a question: give the question")
    if not args.from_reconstruction:
        refuse_unused_search(args, "they need --from-reconstruction")
    if args.seed is not None and args.temperature == 0:
        raise ValueError("--seed only changes sampled answers: give --temperature above 0 too, or leave --seed out")
    if args.top_p != 1.0 and args.temperature == 0:
        raise ValueError("--top-p only changes sampled answers: give --temperature above 0 too, or leave --top-p out")


def load_memory(path: Path):
    """The memory file at `path` (`CompressedMemory.load`), a folder or a missing path refused clearly."""
    from rcc_model import CompressedMemory
    from rcc_model.cli.checks import readable_file

    return CompressedMemory.load(readable_file(path, "memory file"))


def _say_what_was_read(info) -> None:
    """Which windows the answer read (of each part of a question answered part by part), on stderr, where that
    is not the whole memory."""
    import sys

    parts = info.parts or [info]
    for k, part in enumerate(parts):
        reading = part.reading
        if reading is None or not (reading.selected or reading.windows_expanded):
            continue
        which = f"part {k + 1} of the question: " if len(parts) > 1 else ""
        print(f"{which}read {reading.windows_read} of {reading.windows_held} windows ({reading.windows_expanded} "
              f"as text, {reading.windows_read - reading.windows_expanded} as slots), those that best match it",
              file=sys.stderr)
