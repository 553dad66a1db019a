"""RCCMemoryIndex over a memory store compressed beforehand: nothing compressed again, inserts appended to the
store, persisted as a reference to it; on a tiny RCC with SmolLM2's tokenizer."""

import json

import pytest
from llama_index.core import Document

from rcc_integrations.llama_index import RCCMemoryIndex
from rcc_model import MemoryMismatchError, MemoryStore
from rcc_model.corpus import Corpus
from rcc_model.store_builder import compress_corpus
from tests.conftest import randomize_bridges

TEXTS = {f"doc-{i}": f"The harbour office of town {i} keeps a ledger of every ship that docks there. " * (3 + i)
         for i in range(3)}


@pytest.fixture()
def store_path(text_rcc, tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    rows = [{"id": doc_id, "text": text, "n": i} for i, (doc_id, text) in enumerate(TEXTS.items())]
    corpus.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return compress_corpus(text_rcc, Corpus(corpus), tmp_path / "corpus.rccstore", shard_mb=0.01,
                           progress=False).store


def test_an_index_over_a_store_compresses_nothing_and_answers_as_one_that_compressed_the_documents(text_rcc,
                                                                                                  store_path):
    index = RCCMemoryIndex.from_store(store_path, model=text_rcc)
    assert index.engine.compressions == 0 and sorted(index.ref_doc_info) == sorted(TEXTS)
    node = index.docstore.get_node("doc-1:memory")
    assert node.get_content() == TEXTS["doc-1"] and node.metadata == {"n": 1}
    direct = RCCMemoryIndex.from_documents([Document(text=v, id_=k) for k, v in TEXTS.items()], model=text_rcc,
                                           storage=index.store.settings.storage)  # the store's precision
    for node_id in direct.node_ids:
        assert index.memory_of(node_id).states.equal(direct.memory_of(node_id).states)
    question = "Which office keeps a ledger?"
    assert str(index.as_query_engine(max_tokens=6).query(question)) == \
        str(direct.as_query_engine(max_tokens=6).query(question))
    assert index.engine.compressions == 3  # one engine per model: the direct index's three, the store's none


def test_inserted_documents_are_appended_to_the_store_and_an_index_persists_as_a_reference_to_it(text_rcc,
                                                                                                 store_path, tmp_path):
    index = RCCMemoryIndex.from_store(store_path, model=text_rcc)
    shards = len(list((store_path / "shards").glob("shard-*")))
    index.insert(Document(text="A new note about the lighthouse keeper.", id_="doc-new", metadata={"n": 9}))
    assert index.engine.compressions == 1 and len(list((store_path / "shards").glob("shard-*"))) == shards + 1
    store = MemoryStore(store_path)
    assert "doc-new" in store and store.text("doc-new") == "A new note about the lighthouse keeper."
    assert index.memory_of("doc-new:memory").states.equal(store["doc-new"].states)

    index.persist(tmp_path / "index")
    assert not list((tmp_path / "index").glob("rcc_memory/*"))  # every memory stays in the store
    loaded = RCCMemoryIndex.load_from_disk(tmp_path / "index", model=text_rcc)
    assert loaded.store.path == store_path.resolve() and loaded.engine.compressions == 1  # the engine is shared
    assert sorted(loaded.node_ids) == sorted(index.node_ids) and not loaded.damaged
    assert loaded.memory_of("doc-new:memory").states.equal(store["doc-new"].states)
    again = RCCMemoryIndex.from_store(store_path, model=text_rcc)
    assert sorted(again.ref_doc_info) == [*sorted(TEXTS), "doc-new"]


def test_a_store_made_by_another_model_is_refused_and_damaged_rows_are_compressed_again(text_rcc, store_path):
    import copy

    other = randomize_bridges(copy.deepcopy(text_rcc), seed=3)
    with pytest.raises(MemoryMismatchError, match="use the model that made the store"):
        RCCMemoryIndex.from_store(store_path, model=other)

    index = RCCMemoryIndex.from_store(store_path, model=text_rcc)
    store = index.store
    shard = store_path / "shards" / store.entry("doc-2").shard
    data = bytearray(shard.read_bytes())
    data[-7] ^= 0x10  # inside doc-2's rows, the last of its shard
    shard.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match="damaged"):
        memory = index.memory_of("doc-2:memory")
    assert memory.states.equal(text_rcc.compress(TEXTS["doc-2"]).states) and index.engine.compressions == 1
    assert MemoryStore(store_path).entry("doc-2").shard != shard.name  # the fresh memory supersedes the damaged one


def test_a_second_document_under_an_id_the_store_holds_is_refused_before_anything_is_written(text_rcc, store_path):
    """A store holds one memory per document id: a second document under one would take the first one's place."""
    index = RCCMemoryIndex.from_store(store_path, model=text_rcc)
    docstore_before = sorted(index.docstore.docs)
    with pytest.raises(ValueError, match=r"'doc-1' is given twice.*update_ref_doc"):
        index.insert(Document(text="Another document that says it is doc-1.", id_="doc-1"))
    assert sorted(index.docstore.docs) == docstore_before and MemoryStore(store_path).text("doc-1") == TEXTS["doc-1"]
    index.update_ref_doc(Document(text="The new text of doc-1.", id_="doc-1"))  # replacing it is allowed
    assert MemoryStore(store_path).text("doc-1") == "The new text of doc-1."
    with pytest.raises(ValueError, match="given twice"):
        RCCMemoryIndex.from_documents([Document(text="one", id_="x"), Document(text="two", id_="x")],
                                      model=text_rcc, store=store_path)


def test_text_storage_over_a_store_is_refused(text_rcc, store_path):
    with pytest.raises(ValueError, match="give one or the other"):
        RCCMemoryIndex.from_store(store_path, model=text_rcc, storage="text")
