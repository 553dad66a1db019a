"""Run one measurement in a fresh interpreter, so that its peak RSS is its own."""

from __future__ import annotations

import json
import resource
import subprocess
import sys


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def report(result: dict) -> None:
    """Called in the child: hand `result` back to `run_child`."""
    print("RESULT " + json.dumps(result), flush=True)


def run_child(script: str, *argv: str) -> dict:
    """Run `python script *argv` and return the dict its `report` printed."""
    done = subprocess.run([sys.executable, script, *argv], capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(done.stderr[-2000:])
    line = next(ln for ln in done.stdout.splitlines() if ln.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))
