"""The LlamaIndex QA benchmark's own logic (`benchmarks/llamaindex_qa`): the answer checker, the bootstrap, and
the question set's check, which every committed question passes."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks" / "llamaindex_qa"))
from question_set import LICENCES, SOURCES, generated, load, problems, read_rows
from scoring import abstains, bootstrap, contains, is_correct


def test_answers_are_found_as_whole_normalised_words():
    assert contains("The code is 60494.", "60494") and not contains("The code is 604941.", "60494")
    assert contains("Its fn=35 default", "35") and contains("bug-gzip@gnu.org", "bug-gzip@gnu.org")
    assert contains("It is THE Mozilla Foundation", "mozilla foundation")


def test_every_answer_group_is_needed_and_absent_questions_want_an_abstention():
    two = {"kind": "two_fact", "answers": [["4471"], ["Ada Brandt", "Brandt"]]}
    assert is_correct("4471, and the keeper is Brandt.", two) and not is_correct("4471", two)
    absent = {"kind": "absent", "answers": []}
    assert is_correct("The document does not say.", absent) and is_correct("It is not mentioned.", absent)
    assert not is_correct("The code is 1234.", absent) and not abstains("The code is 1234.")


def test_the_bootstrap_brackets_the_share_correct_and_is_seeded():
    correct = [True] * 30 + [False] * 10
    low, high = bootstrap(correct)
    assert 0.5 < low < 0.75 < high < 0.95
    assert bootstrap(correct) == (low, high) and bootstrap([True] * 5) == (1.0, 1.0)


def test_the_check_finds_missing_answers_present_withheld_strings_and_close_facts():
    docs = {"d": "The gate code of the mill is 4471. " + "Filler. " * 200 + "The keeper of the mill is Ada."}
    rows = [{"id": "1", "doc": "d", "kind": "exact", "question": "q", "answers": [["9999"]], "source": "licence"},
            {"id": "2", "doc": "d", "kind": "absent", "question": "q", "answers": [], "source": "licence",
             "withheld": ["4471"]},
            {"id": "3", "doc": "d", "kind": "two_fact", "question": "q", "answers": [["4471"], ["Ada"]],
             "source": "generated"},
            {"id": "4", "doc": "d", "kind": "two_fact", "question": "q", "answers": [["mill is 4471"], ["Filler"]],
             "source": "generated"}]
    found = problems(docs, rows)
    assert len(found) == 3 and found[0].startswith("1 ") and found[1].startswith("2 ") and found[2].startswith("4 ")


@pytest.mark.skipif(not LICENCES.is_dir(), reason="Debian's licence texts (base-files) are not on this machine")
def test_the_generated_questions_are_the_generator_s_and_every_question_checks_out(tmp_path):
    assert generated()[1] == read_rows("generated.jsonl")
    if shutil.which("groff") is None or not all(Path(s.path).is_file() for s in SOURCES.values()):
        pytest.skip("groff or a man page of the real documents is missing (minimal images drop /usr/share/man)")
    docs, rows = load(tmp_path)
    assert problems(docs, rows) == []
    kinds = {kind: sum(row["kind"] == kind for row in rows) for kind in ("exact", "paraphrased", "two_fact", "absent")}
    assert min(kinds.values()) >= 60, kinds
