"""What the integrations promise users, on the packaged default: facts read back from documents longer than
the decoder's own window (8,192 positions), through memory.

`ChatRCC` reads the window of one long document that best matches each question (the model's `read_slots`)
at four slot alignments (`read_alignments`; README "Reading part of a memory"); over eight draws of codes and
documents it answered 23 of 24 such facts. `RCCMemoryIndex` does the same across three such documents, one
fact in each: 12 of 12 over four draws (`benchmarks/long_documents/`, the shipped weights).
"""

import pytest
from langchain_core.documents import Document
from llama_index.core import Document as LlamaDocument

from rcc_integrations.langchain import ChatRCC
from rcc_integrations.llama_index import RCCMemoryIndex
from rcc_model.samples import codes_in_one_document, codes_in_three_documents

# Each compresses 22K to 66K tokens and reads them back: minutes of CPU, out of the default run.
pytestmark = pytest.mark.slow


def test_langchain_reads_facts_at_several_depths_of_a_long_document():
    document, planted = codes_in_one_document(draw=1)
    llm = ChatRCC(max_tokens=16)
    answers = [llm.invoke(question, memory=[Document(page_content=document)]).content for question, _ in planted]
    assert all(code in answer for (_, code), answer in zip(planted, answers)), answers


def test_llama_index_reads_facts_from_several_long_documents():
    planted = codes_in_three_documents(draw=2)
    documents = [LlamaDocument(text=document) for document, _, _ in planted]
    engine = RCCMemoryIndex.from_documents(documents).as_query_engine(max_tokens=16)
    answers = [str(engine.query(question)) for _, question, _ in planted]
    assert all(code in answer for (_, _, code), answer in zip(planted, answers)), answers
