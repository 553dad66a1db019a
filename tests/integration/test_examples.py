"""The examples run offline on the packaged default model (smoke tests, so they never rot)."""

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.parametrize("script,expect", [("langchain_chain.py", "from cache"), ("langchain_agent.py", "ToolMessage"),
                                           ("llamaindex_agent.py", "tool call: library")])
def test_example_runs(script, expect):
    done = subprocess.run([sys.executable, str(EXAMPLES / script)], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert expect in done.stdout
