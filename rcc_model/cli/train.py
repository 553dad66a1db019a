"""`rcc train CONFIG.json`: train (or resume) an RCC model; see `rcc_model.training.config.TrainConfig`."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub) -> None:
    from rcc_model.cli.checks import positive_float, positive_int

    p = sub.add_parser("train", help="train or resume an RCC model from a JSON config",
                       description="Train an RCC model. Running the same command again resumes from the run "
                       "folder's last checkpoint. Multi-GPU: accelerate launch -m rcc_model.cli train CONFIG.")
    p.add_argument("config", type=Path, help="JSON file with TrainConfig fields (data, out, objectives, ...)")
    p.add_argument("--steps", type=positive_int, help="override the number of steps")
    p.add_argument("--max-minutes", type=positive_float, help="stop (with a checkpoint) after this many minutes")
    p.add_argument("--stop-at", type=positive_int, metavar="STEP",
                   help="end after this step (resumable), the learning-rate schedule still spanning --steps")
    p.add_argument("--export", type=Path, metavar="DIR",
                   help="do not train: write the run's latest state as an RCC checkpoint folder (bf16 weights)")


def run(args: argparse.Namespace) -> int:
    from rcc_model.cli.checks import readable_file, writable_folder
    from rcc_model.training.config import TrainConfig
    from rcc_model.training.loop import export, train

    config = TrainConfig.load(readable_file(args.config, "config file"))
    if args.export is not None:
        writable_folder(args.export, "checkpoint folder")
    if args.steps is not None:
        config.steps = args.steps
    if args.max_minutes is not None:
        config.max_minutes = args.max_minutes
    if args.stop_at is not None:
        config.stop_at = args.stop_at
    if args.export is not None:
        print(f"checkpoint: {export(config, args.export)}")
        return 0
    out = train(config)
    from accelerate import PartialState

    if PartialState().is_main_process:  # one line for a launch of many processes
        print(f"run folder: {out}")
    return 0
