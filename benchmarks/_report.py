"""Write a benchmark's results next to its script: a Markdown table headed by the command that produced it,
and the same rows as JSON."""

from __future__ import annotations

import json
from pathlib import Path


def write_report(stem: Path, title: str, command: str, table: list[str], data: dict) -> None:
    """`stem`.md (title, command, `table` lines) and `stem`.json (`data` with the command); prints the table."""
    lines = [f"# {title}", "", f"Command: `{command}`", "", *table]
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    stem.with_suffix(".json").write_text(json.dumps({"command": command, **data}, indent=2) + "\n")
    print("\n".join(lines))
