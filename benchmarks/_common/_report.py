"""Write a benchmark's results next to its script: Markdown headed by the command that produced it (and the
machine, where timings depend on it), and the same data as JSON."""

from __future__ import annotations

import json
import platform
from pathlib import Path


def machine(threads: int) -> str:
    """The processor a timing was measured with, for the report's header: its name, vector instructions and
    whether it multiplies bfloat16 in hardware (without, bf16 runs ~100x slower than float32), and threads."""
    import torch

    from rcc_model.bases import cpu_has_fast_bf16

    cpuinfo = Path("/proc/cpuinfo")
    names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
             if line.startswith("model name")] if cpuinfo.is_file() else []
    bf16 = "bf16 matrix instructions" if cpu_has_fast_bf16() else "no bf16 matrix instructions"
    return (f"{names[0] if names else platform.processor() or platform.machine()}, "
            f"{torch.backends.cpu.get_cpu_capability()}, {bf16}, {threads} threads, {platform.system()}")


def write_report(stem: Path, title: str, command: str, body: list[str], data: dict,
                 measured_on: str | None = None) -> None:
    """`stem`.md (title, machine, command, `body` lines) and `stem`.json (`data` with the command); prints it."""
    header = (f"Machine: {measured_on}. " if measured_on else "") + f"Command: `{command}`"
    lines = [f"# {title}", "", header, "", *body]
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    stem.with_suffix(".json").write_text(json.dumps({"command": command, **data}, indent=2) + "\n")
    print("\n".join(lines))
