"""Learning curve of a training run: Markdown table + PNG from its log.jsonl.

    python benchmarks/training/report.py benchmarks/training/default_r4_log.jsonl

Every (re)start of the run is marked, with the settings it started with: a resumed run may continue
under a changed config, and the curve should say so.
"""

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def describe(config: dict) -> str:
    objectives = ", ".join(f"{name} {weight:g}" for name, weight in config["objectives"].items())
    return (f"{config['trainable']}, encoder {'trained' if config['train_encoder'] else 'frozen'}, "
            f"{objectives}, lr {config['lr']:g}, {config['steps']} scheduled steps")


def main(path: Path) -> None:
    records = [json.loads(line) for line in path.read_text().splitlines()]
    starts = [(r["step"], describe(r["config"])) for r in records if r["event"] == "start"]
    train = [(r["step"], r["loss"], r["context_tokens_per_s"]) for r in records if r["event"] == "train"]
    heldout = sorted({r["step"]: r["heldout_loss"] for r in records if r["event"] == "eval"}.items())
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.plot([s for s, _, _ in train], [loss for _, loss, _ in train], lw=0.8, label="train (5-step mean)")
    ax.plot([s for s, _ in heldout], [loss for _, loss in heldout], "o-", label="held-out")
    for step, _ in starts[1:]:
        ax.axvline(step, color="grey", ls=":", lw=1)
    ax.set_xlabel("step (8 examples; dotted: resumed)")
    ax.set_ylabel("cross-entropy of the objective mix (nats)")
    ax.set_title(path.stem)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path.with_suffix(".png"), dpi=100)
    lines = [f"# {path.stem}", "", f"Command: `python benchmarks/training/report.py {path}`", "",
             "| (re)started at step | settings |", "|---:|---|", *[f"| {s} | {d} |" for s, d in starts], "",
             "| step | held-out loss |", "|---:|---:|", *[f"| {s} | {loss:.3f} |" for s, loss in heldout], "",
             "| step | train loss | context tokens/s |", "|---:|---:|---:|",
             *[f"| {s} | {loss:.3f} | {tps:.0f} |" for s, loss, tps in train]]
    path.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
