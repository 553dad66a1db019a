"""Write a benchmark's results next to its script: Markdown headed by the command that produced it (and the
machine, where timings depend on it), and the same data as JSON."""

from __future__ import annotations

import json
import platform
from pathlib import Path


def machine(threads: int) -> str:
    """The processor and thread count a timing was measured with, for the report's header."""
    return f"{platform.processor() or platform.machine()}, {threads} threads, {platform.system()}"


def write_report(stem: Path, title: str, command: str, body: list[str], data: dict,
                 measured_on: str | None = None) -> None:
    """`stem`.md (title, machine, command, `body` lines) and `stem`.json (`data` with the command); prints it."""
    header = (f"Machine: {measured_on}. " if measured_on else "") + f"Command: `{command}`"
    lines = [f"# {title}", "", header, "", *body]
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    stem.with_suffix(".json").write_text(json.dumps({"command": command, **data}, indent=2) + "\n")
    print("\n".join(lines))
