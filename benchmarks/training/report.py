"""Learning curve of a training run: Markdown table + PNG from its log.jsonl.

    python benchmarks/training/report.py benchmarks/training/default_r4_session1_log.jsonl
"""

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def main(path: Path) -> None:
    records = [json.loads(line) for line in path.read_text().splitlines()]
    train = [(r["step"], r["loss"], r["context_tokens_per_s"]) for r in records if r["event"] == "train"]
    heldout = [(r["step"], r["heldout_loss"]) for r in records if r["event"] == "eval"]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot([s for s, _, _ in train], [loss for _, loss, _ in train], label="train (5-step mean)")
    ax.plot([s for s, _ in heldout], [loss for _, loss in heldout], "o-", label="held-out")
    ax.set_xlabel("step (8 windows of 256 tokens each)")
    ax.set_ylabel("reconstruction cross-entropy (nats)")
    ax.set_title(path.stem)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path.with_suffix(".png"), dpi=100)
    lines = [f"# {path.stem}", "", f"Command: `python benchmarks/training/report.py {path}`", "",
             "| step | held-out loss |", "|---:|---:|", *[f"| {s} | {loss:.3f} |" for s, loss in heldout], "",
             "| step | train loss | context tokens/s |", "|---:|---:|---:|",
             *[f"| {s} | {loss:.3f} | {tps:.0f} |" for s, loss, tps in train]]
    path.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
