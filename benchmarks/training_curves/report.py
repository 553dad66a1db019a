"""Learning curve of a training run: Markdown table + PNG from its log.jsonl files.

    python benchmarks/training_curves/report.py benchmarks/training_curves/logs/default_r4_log.jsonl
    python benchmarks/training_curves/report.py STAGE1.jsonl STAGE2.jsonl --out benchmarks/training_curves/r4

Several logs are stages of one model (each stage's config starts from the previous stage's result through
`init`); their steps are laid end to end. Every (re)start is marked with the settings it started with: a
resumed run may continue under a changed config, and the curve should say so.
"""

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def describe(config: dict) -> str:
    objectives = ", ".join(f"{name} {weight:g}" for name, weight in config["objectives"].items())
    if config.get("qa_haystack"):
        objectives += f" ({config['qa_haystack']:g} of it hidden in up to {config['long_context_windows']} windows)"
    start = f"init {'/'.join(Path(config['init']).parts[-2:])}, " if config.get("init") else ""
    rate = config.get("rate")
    start += f"r = {'/'.join(map(str, rate)) if isinstance(rate, list) else rate}, " if rate else ""
    return (f"{start}{config['trainable']}, encoder {'trained' if config['train_encoder'] else 'frozen'}, "
            f"{objectives}, lr {config['lr']:g}, {config['steps']} scheduled steps, seed {config['seed']}")


def heldout_by_rate(records: list[dict]) -> dict[int | None, list[tuple[int, float]]]:
    """Held-out loss per compression rate: a multi-rate stage logs one per rate; a single-rate stage, the
    loss at the rate it trains (`rate: null` keeps the default rate of the model it starts from: the first of
    a multi-rate stage's rates; unknown (None) when no earlier stage's log says it)."""
    series: dict[int | None, list[tuple[int, float]]] = {}
    rate = None
    for r in records:
        if r["event"] == "start":
            rate = r["config"].get("rate") or rate
        elif r["event"] == "eval":
            default = rate[0] if isinstance(rate, list) else rate
            losses = r.get("heldout_loss_by_rate") or {default: r["heldout_loss"]}
            for key, loss in losses.items():
                series.setdefault(None if key is None else int(key), []).append((r["step"], loss))
    return series


def read_stages(paths: list[Path]) -> list[dict]:
    """All records of all stages, with `step` shifted so that each stage continues where the last ended, and
    `tokens`: context tokens trained on so far (stages differ in batch size, so steps are no common axis)."""
    records, offset = [], 0
    for path in paths:
        stage = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        records += [{**r, "step": r["step"] + offset} for r in stage]
        offset = max(r["step"] for r in records)
    at_start, seen = 0.0, 0.0  # a (re)start resets the log's token rate and clock
    for r in records:
        if r["event"] == "start":
            at_start = seen
        elif r["event"] == "train":
            seen = r["tokens"] = at_start + r["context_tokens_per_s"] * r["elapsed_s"]
    known = [(0, 0.0)] + [(r["step"], r["tokens"]) for r in records if r["event"] == "train"]
    for r in records:
        r.setdefault("tokens", _interpolate(known, r["step"]))
    return records


def _interpolate(points: list[tuple[int, float]], step: int) -> float:
    """Tokens at `step` from the nearest logged steps around it (evaluations fall between train logs)."""
    below = max((p for p in points if p[0] <= step), default=points[0])
    above = min((p for p in points if p[0] >= step), default=points[-1])
    if above[0] == below[0]:
        return below[1]
    return below[1] + (above[1] - below[1]) * (step - below[0]) / (above[0] - below[0])


def main(paths: list[Path], out: Path) -> None:
    records = read_stages(paths)
    starts = [(r["step"], describe(r["config"])) for r in records if r["event"] == "start"]
    train = [(r["step"], r["loss"], r["context_tokens_per_s"]) for r in records if r["event"] == "train"]
    heldout = heldout_by_rate(records)
    millions = {r["step"]: r["tokens"] / 1e6 for r in records}
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.plot([millions[s] for s, _, _ in train], [loss for _, loss, _ in train], lw=0.8,
            label="train (mean since the last log)")
    for rate in _rates(heldout):
        ax.plot([millions[s] for s, _ in heldout[rate]], [loss for _, loss in heldout[rate]], "o-",
                label=_heldout_label(rate))
    for step, _ in starts[1:]:
        ax.axvline(millions[step], color="grey", ls=":", lw=1)
    ax.set_xlabel("context tokens trained on, millions (dotted: resumed or next stage)")
    ax.set_ylabel("cross-entropy of the objective mix (nats)")
    ax.set_title(out.name)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=100)
    command = " ".join(["python benchmarks/training_curves/report.py", *map(str, paths)]
                       + ([f"--out {out}"] if out != paths[0].with_suffix("") else []))
    lines = [f"# {out.name}", "", f"Command: `{command}`", "",
             "| (re)started at step | settings |", "|---:|---|", *[f"| {s} | {d} |" for s, d in starts], "",
             *_heldout_table(heldout, millions), "",
             "| step | context tokens (M) | train loss | context tokens/s |", "|---:|---:|---:|---:|",
             *[f"| {s} | {millions[s]:.2f} | {loss:.3f} | {tps:.0f} |" for s, loss, tps in train]]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")


def _rates(heldout: dict[int | None, list]) -> list[int | None]:
    return sorted(heldout, key=lambda rate: (rate is None, rate or 0))


def _heldout_label(rate: int | None) -> str:
    return "held-out loss" if rate is None else f"held-out loss, r = {rate}"


def _heldout_table(heldout: dict[int | None, list[tuple[int, float]]], millions: dict[int, float]) -> list[str]:
    rates = _rates(heldout)
    by_step: dict[int, dict[int, float]] = {}
    for rate in rates:
        for step, loss in heldout[rate]:
            by_step.setdefault(step, {})[rate] = loss
    return ["| step | context tokens (M) | " + " | ".join(map(_heldout_label, rates)) + " |",
            "|---:|---:|" + "---:|" * len(rates),
            *[f"| {step} | {millions[step]:.2f} | "
              + " | ".join(f"{losses[rate]:.3f}" if rate in losses else "" for rate in rates) + " |"
              for step, losses in sorted(by_step.items())]]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("logs", type=Path, nargs="+", help="log.jsonl of each stage, in training order")
    parser.add_argument("--out", type=Path, help="output path without suffix (default: the first log's)")
    args = parser.parse_args()
    main(args.logs, args.out or args.logs[0].with_suffix(""))
