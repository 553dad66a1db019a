"""The packaged "reading" weights: the default's, with the decoder taught to read the best windows as text beside
the slots of their neighbours (`expand_tokens` 256), on the real base through `RCCMemoryIndex`."""

import pytest
from llama_index.core import Document

from rcc_integrations.llama_index import RCCMemoryIndex
from rcc_model import RCCModel
from rcc_model.samples import chronicle

FACT = "The access code of the archive is 7316482."


@pytest.fixture(scope="module")
def reading_model():
    return RCCModel.from_pretrained("reading", dtype="float32", device="cpu")


def test_reading_expands_the_window_holding_the_fact_and_answers_from_it(reading_model):
    assert reading_model.config.expand_tokens == 256 and reading_model.config.rate == 4
    text = chronicle(sentences=160, seed=7, facts=[FACT])
    index = RCCMemoryIndex.from_documents([Document(text=text, id_="chronicle")], model=reading_model)
    assert index.outline_of("chronicle:memory").num_windows >= 4
    response = index.as_query_engine(max_tokens=12).query("What is the access code of the archive?")
    expanded = [s.node for s in response.source_nodes if s.node.metadata["rcc_read"] == "expanded"]
    assert len(expanded) == 1 and "7316482" in expanded[0].get_content()
    assert "7316482" in str(response)


def test_reading_declines_when_no_window_holds_the_answer(reading_model):
    index = RCCMemoryIndex.from_documents([Document(text=chronicle(sentences=160, seed=7, facts=[FACT]))],
                                          model=reading_model)
    answer = str(index.as_query_engine(max_tokens=12).query("What is the door code of the lighthouse?"))
    assert answer.startswith(reading_model.config.abstention)


def test_reading_answers_both_parts_of_a_two_part_question_from_two_windows(reading_model):
    keeper = "The keeper of the lighthouse is Amara Quist."
    text = chronicle(sentences=160, seed=3, facts=[FACT, keeper])  # a third and two thirds of the way in
    index = RCCMemoryIndex.from_documents([Document(text=text, id_="chronicle")], model=reading_model)
    response = index.as_query_engine(max_tokens=12, read_alignments=1).query(
        "What is the access code of the archive, and who is the keeper of the lighthouse?")
    code, name = str(response).split("\n")
    assert "7316482" in code and "Amara Quist" in name
    expanded = {r["part"]: r["window"] for r in response.metadata["reading"] if r["read"] == "expanded"}
    assert expanded[0] != expanded[1]  # each part read the window of its own fact as text
