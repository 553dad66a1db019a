"""The examples run offline on the packaged default model and answer their questions right: each test reads
the example's answers from what it prints, so a wrong answer fails, not only a crash."""

import re
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def run(script: str) -> str:
    done = subprocess.run([sys.executable, str(EXAMPLES / script)], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def final_answer(stdout: str) -> str:
    """Everything after the example's last "answer:" (a step the agent leaked after it would show here)."""
    _, marker, answer = stdout.rpartition("answer: ")
    assert marker, f"no answer printed:\n{stdout}"
    return answer.strip()


def test_the_chain_answers_both_questions_from_memory_compressed_once():
    stdout = run("langchain_chain.py")
    answers = dict(re.findall(r"^Q: (.+)\nA: (.*)$", stdout, re.MULTILINE))
    assert "Ines Okafor" in answers["Who keeps the lighthouse?"], stdout
    assert "48213" in answers["What is the access code of the archive?"], stdout
    assert "compressed now: 0, from cache: " in stdout  # the second question read the cached memory


def test_the_langchain_agent_adds_7_to_the_archive_code_with_its_calculator():
    stdout = run("langchain_agent.py")
    assert "'args': {'a': 48213, 'b': 7}" in stdout or "'args': {'a': 7, 'b': 48213}" in stdout, stdout
    assert "ToolMessage: 48220" in stdout
    assert "48220" in final_answer(stdout), stdout


def test_the_llamaindex_agent_looks_up_the_lighthouse_keeper_in_its_library():
    stdout = run("llamaindex_agent.py")
    assert "tool call: library(" in stdout and "Ines Okafor" in stdout.split("tool call: library(")[1], stdout
    answer = final_answer(stdout)
    assert "Ines Okafor" in answer and "Action" not in answer and "\n" not in answer, stdout
