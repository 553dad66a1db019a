"""What the integrations promise users, on the packaged default: facts read back from documents longer than
the decoder's own window (8,192 positions), through memory.

The default does not reach this yet (see MODEL_CARD.md for its measured numbers), so these tests are strict
expected failures: they run, and the suite fails the day they pass, so the marker is removed with the model
that earns it.
"""

import random

import pytest
from langchain_core.documents import Document
from llama_index.core import Document as LlamaDocument

from rcc_integrations.langchain import ChatRCC
from rcc_integrations.llama_index import RCCMemoryIndex
from rcc_model.samples import chronicle

NOT_YET = pytest.mark.xfail(strict=True, reason="the packaged default does not yet reach the needle floors "
                                                "(MODEL_CARD.md); remove when a trained default does")
DOCUMENT_TOKENS = 16_000  # about twice the decoder's 8,192 positions


def facts(count: int, seed: int) -> list[tuple[str, str, str]]:
    """(sentence, question, answer) triples with codes nobody could guess."""
    rng = random.Random(seed)
    places = ["the north tower", "the salt store", "the signal box", "the seed bank", "the clock house"]
    out = []
    for place in places[:count]:
        code = str(rng.randint(10000, 99999))
        out.append((f"The access code of {place} is {code}.", f"What is the access code of {place}?", code))
    return out


@NOT_YET
def test_langchain_reads_facts_at_several_depths_of_a_long_document():
    planted = facts(3, seed=1)
    document = chronicle(sentences=DOCUMENT_TOKENS // 12, seed=3, facts=[f for f, _, _ in planted])
    llm = ChatRCC(max_tokens=16)
    answers = [llm.invoke(question, memory=[Document(page_content=document)]).content for _, question, _ in planted]
    assert all(code in answer for (_, _, code), answer in zip(planted, answers)), answers


@NOT_YET
def test_llama_index_reads_facts_from_several_long_documents():
    planted = facts(3, seed=2)
    documents = [LlamaDocument(text=chronicle(sentences=DOCUMENT_TOKENS // 12, seed=10 + i, facts=[fact]))
                 for i, (fact, _, _) in enumerate(planted)]
    engine = RCCMemoryIndex.from_documents(documents).as_query_engine(max_tokens=16)
    answers = [str(engine.query(question)) for _, question, _ in planted]
    assert all(code in answer for (_, _, code), answer in zip(planted, answers)), answers
