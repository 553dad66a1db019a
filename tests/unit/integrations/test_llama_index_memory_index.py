"""RCCMemoryIndex contract tests on a tiny RCC with SmolLM2's tokenizer (LlamaIndex ships none)."""

import asyncio

import pytest
from llama_index.core import Document, StorageContext, load_index_from_storage

from rcc_integrations.llama_index import RCCMemoryIndex
from rcc_model import MemoryMismatchError, aligned_views
from tests.conftest import randomize_bridges

TEXT = "The harbour office keeps a ledger of every ship that docks there. " * 12


def docs():
    return [Document(text=TEXT + f" Document {i}.", id_=f"doc-{i}", metadata={"n": i}) for i in range(3)]


@pytest.fixture()
def index(text_rcc):
    """An index that compresses its documents when they are added and persists their memory."""
    return RCCMemoryIndex.from_documents(docs(), model=text_rcc, storage="int8")


def test_documents_are_compressed_whole_with_metadata(index, text_rcc):
    assert len(index.node_ids) == 3 and sorted(index.ref_doc_info) == ["doc-0", "doc-1", "doc-2"]
    node = index.docstore.get_node("doc-1:memory")
    assert node.get_content() == TEXT + " Document 1." and node.metadata == {"n": 1}
    assert index.memory_of("doc-1:memory").token_count == len(text_rcc.encode_text(TEXT + " Document 1."))


def test_insert_delete_update_refresh(index):
    compressions = index.engine.compressions
    index.insert(Document(text="A new note about the lighthouse.", id_="doc-3"))
    assert "doc-3" in index.ref_doc_info and index.engine.compressions == compressions + 1
    index.delete_ref_doc("doc-0", delete_from_docstore=True)
    assert "doc-0" not in index.ref_doc_info and "doc-0:memory" not in index.node_ids
    index.update_ref_doc(Document(text="Rewritten text of document one.", id_="doc-1"))
    assert index.docstore.get_node("doc-1:memory").get_content() == "Rewritten text of document one."
    before = index.engine.compressions
    changed = index.refresh_ref_docs([Document(text="Rewritten text of document one.", id_="doc-1"),
                                      Document(text=TEXT + " Document 2.", id_="doc-2", metadata={"n": 2})])
    assert changed == [False, False] and index.engine.compressions == before  # unchanged: not recompressed


def test_persist_then_reload_gives_the_same_class_and_answers(index, text_rcc, tmp_path):
    answer = index.as_query_engine(max_tokens=6).query("Which office keeps a ledger?")
    index.persist(tmp_path / "store")
    loaded = RCCMemoryIndex.load_from_disk(tmp_path / "store", model=text_rcc)
    assert type(loaded) is RCCMemoryIndex and sorted(loaded.node_ids) == sorted(index.node_ids)
    again = loaded.as_query_engine(max_tokens=6).query("Which office keeps a ledger?")
    assert str(again) == str(answer)
    context = StorageContext.from_defaults(persist_dir=str(tmp_path / "store"))
    assert type(load_index_from_storage(context, model=text_rcc, persist_dir=tmp_path / "store")) is RCCMemoryIndex


def test_an_index_built_at_another_rate_keeps_it_across_persist_and_load(text_rcc, tmp_path):
    text_rcc.config.rates = [4, 8]
    index = RCCMemoryIndex.from_documents(docs(), model=text_rcc, rate=8)
    assert {index.memory_of(node_id).rate for node_id in index.node_ids} == {8}
    assert index.as_chat_engine(max_tokens=2).llm.rate == 8
    answer = index.as_query_engine(max_tokens=4).query("Which office keeps a ledger?")
    index.persist(tmp_path / "store")
    loaded = RCCMemoryIndex.load_from_disk(tmp_path / "store", model=text_rcc)
    assert loaded.rate == 8 and str(loaded.as_query_engine(max_tokens=4).query("Which office keeps a ledger?")) \
        == str(answer)
    with pytest.raises(MemoryMismatchError, match="rate 8, not 4"):
        RCCMemoryIndex.load_from_disk(tmp_path / "store", model=text_rcc, rate=4)

def test_another_models_index_is_refused(index, text_rcc, tmp_path):
    index.persist(tmp_path / "store")
    randomize_bridges(text_rcc)  # now computes something else
    with pytest.raises(MemoryMismatchError, match="rebuild the index"):
        RCCMemoryIndex.load_from_disk(tmp_path / "store", model=text_rcc)


def test_a_corrupted_memory_file_is_reported_and_the_rest_loads(index, text_rcc, tmp_path):
    store = index.persist(tmp_path / "store")
    victim = sorted((store / "rcc_memory").iterdir())[0]
    victim.write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="damaged"):
        loaded = RCCMemoryIndex.load_from_disk(store, model=text_rcc)
    assert len(loaded.damaged) == 1 and len(loaded.node_ids) == 3
    response = loaded.as_query_engine(max_tokens=4).query("Which office?")  # rebuilt from stored text
    assert len(response.source_nodes) == 3 and loaded.damaged == []


def test_a_crash_mid_persist_leaves_the_previous_state(index, text_rcc, tmp_path, monkeypatch):
    store = index.persist(tmp_path / "store")
    before = sorted(p.name for p in store.iterdir())
    index.insert(Document(text="Another document.", id_="doc-9"))
    def disk_full(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(type(index.storage_context), "persist", disk_full)
    with pytest.raises(OSError):
        index.persist(store)
    assert sorted(p.name for p in store.iterdir()) == before
    assert "doc-9" not in RCCMemoryIndex.load_from_disk(store, model=text_rcc).ref_doc_info


def test_query_engine_reads_memory_sync_async_and_streaming(index):
    engine = index.as_query_engine(max_tokens=6)
    response = engine.query("Which office?")
    assert response.metadata["memory_slots"] == sum(index.memory_of(i).num_slots for i in index.node_ids)
    assert {s.node.ref_doc_id for s in response.source_nodes} == {"doc-0", "doc-1", "doc-2"}
    streamed = "".join(index.as_query_engine(max_tokens=6, streaming=True).query("Which office?").response_gen)
    assert streamed == str(response)
    assert str(asyncio.run(engine.aquery("Which office?"))) == str(response)


def test_over_budget_the_retriever_reads_the_windows_that_match_the_question(text_rcc):
    planted = TEXT + " The lighthouse keeper is Amara Quist. " + TEXT
    index = RCCMemoryIndex.from_documents([*docs(), Document(text=planted, id_="doc-9", metadata={"n": 9})],
                                          model=text_rcc)
    window_slots = text_rcc.config.window // text_rcc.config.rate
    nodes = index.as_retriever(memory_budget=2 * window_slots).retrieve("Who keeps the lighthouse?")
    assert len(nodes) == 2 and nodes[0].score >= nodes[1].score > 0
    best = nodes[0].node
    assert "lighthouse" in best.get_content() and best.ref_doc_id == "doc-9"
    assert best.parent_node.node_id == "doc-9:memory" and best.metadata["n"] == 9
    memory = index.memory_of("doc-9:memory").windows()[best.metadata["rcc_window"]]
    assert index.memory_of_nodes([best]).states.equal(memory.states)

    response = index.as_query_engine(max_tokens=4, memory_budget=2 * window_slots).query("Who keeps the lighthouse?")
    assert response.metadata["memory_slots"] == 2 * window_slots
    assert {s.node.node_id for s in response.source_nodes} == {n.node.node_id for n in nodes}
    everything = index.as_retriever().retrieve("Who keeps the lighthouse?")
    assert len(everything) == 4 and all(n.score == 1.0 for n in everything)


def test_empty_documents_are_refused(text_rcc):
    with pytest.raises(ValueError, match="empty documents"):
        RCCMemoryIndex.from_documents([Document(text="  ", id_="e")], model=text_rcc)


def test_chat_engine_keeps_the_conversation_and_reads_memory(index):
    engine = index.as_chat_engine(max_tokens=5)
    first = engine.chat("Which office keeps a ledger?")
    assert len(first.source_nodes) == 3 and first.metadata["usage"]["memory_slots"] > 0
    engine.chat("And what does it record?")
    assert [m.role.value for m in engine.chat_history] == ["user", "assistant", "user", "assistant"]
    streamed = engine.stream_chat("Once more?")
    text = "".join(streamed.response_gen)
    assert engine.chat_history[-1].content == text.strip()  # LlamaIndex strips what it writes to history
    engine.reset()
    assert engine.chat_history == []

    async def both():
        answer = await engine.achat("Which office?")
        stream = await engine.astream_chat("Which office?")
        pieces = [p async for p in stream.async_response_gen()]
        return answer, pieces

    answer, pieces = asyncio.run(both())
    assert isinstance(answer.response, str) and isinstance("".join(pieces), str)


def test_query_and_chat_engines_decode_the_windows_they_read_at_the_models_slot_alignments(text_rcc, monkeypatch):
    monkeypatch.setattr(text_rcc.config, "read_alignments", 2)
    realign, seen = aligned_views, []
    monkeypatch.setattr("rcc_integrations._runtime.aligned_views", lambda model, memory, texts, alignments=None:
                        seen.append((list(texts), alignments)) or realign(model, memory, texts, alignments))
    planted = TEXT + " The lighthouse keeper is Amara Quist. " + TEXT
    index = RCCMemoryIndex.from_documents([*docs(), Document(text=planted, id_="doc-9")], model=text_rcc)
    slots = text_rcc.config.window // text_rcc.config.rate
    response = index.as_query_engine(max_tokens=4, memory_budget=slots).query("Who keeps the lighthouse?")
    (source,) = response.source_nodes
    assert seen == [([source.node.get_content()], None)] and "lighthouse" in seen[0][0][0]
    assert response.metadata["memory_slots"] == slots and response.metadata["memory_alignments"] == 2
    chat = index.as_chat_engine(max_tokens=4, memory_budget=slots).chat("Who keeps the lighthouse?")
    assert [s.node.get_content() for s in chat.source_nodes] == seen[0][0] and seen[1] == seen[0]
    assert chat.metadata["usage"]["memory_slots"] == slots  # the stored windows; the other alignment beside them
    assert chat.metadata["usage"]["memory_alignments"] == 2
    one = index.as_query_engine(max_tokens=4, memory_budget=slots, read_alignments=1).query("Who keeps the lighthouse?")
    index.as_chat_engine(max_tokens=4, memory_budget=slots, read_alignments=1).chat("Who keeps the lighthouse?")
    assert len(seen) == 2 and one.metadata["memory_alignments"] == 1  # one asked for: the stored memory alone


def test_an_index_at_a_rate_with_weights_of_its_own_reads_and_reloads_with_them(rate_weights_checkpoint, tmp_path):
    folder, fingerprints = rate_weights_checkpoint
    index = RCCMemoryIndex.from_documents(docs(), model=folder, rate=8)
    assert index.engine.model.fingerprint == fingerprints[8] and index.rate == 8
    index.persist(tmp_path / "store")
    loaded = RCCMemoryIndex.load_from_disk(tmp_path / "store", model=folder)  # no rate: the one it was built at
    assert (loaded.rate, loaded.engine.model.fingerprint) == (8, fingerprints[8])
    assert RCCMemoryIndex.from_documents(docs(), model=folder).engine.model.fingerprint == fingerprints[4]



# ------------------------------------------------------------------ duplicate and missing ids, as LlamaIndex has them
def vector_index(documents):
    """LlamaIndex's own VectorStoreIndex over the same documents (a mock embedding: no model)."""
    from llama_index.core import VectorStoreIndex
    from llama_index.core.embeddings import MockEmbedding

    return VectorStoreIndex.from_documents(documents, embed_model=MockEmbedding(embed_dim=8))


def held(index) -> dict[str, list[str]]:
    """Document id -> the texts of its nodes, as the index's ref_doc_info and docstore tell them."""
    return {ref: sorted(index.docstore.get_node(n).get_content() for n in info.node_ids)
            for ref, info in index.ref_doc_info.items()}


def test_duplicate_document_ids_are_kept_as_vector_store_index_keeps_them(text_rcc, tmp_path):
    """LlamaIndex keeps every document given, several under one ref_doc_id; none is dropped."""
    twice = [Document(text=TEXT + " First.", id_="same"), Document(text=TEXT + " Second.", id_="same"),
             Document(text=TEXT + " Other.", id_="other")]
    ours, theirs = RCCMemoryIndex.from_documents(twice, model=text_rcc), vector_index(twice)
    assert held(ours) == held(theirs) and len(held(ours)["same"]) == 2
    for node_id in ours.ref_doc_info["same"].node_ids:  # each reads the memory of its own text
        text = ours.docstore.get_node(node_id).get_content()
        assert ours.memory_of(node_id).token_count == len(text_rcc.encode_text(text))
    again = Document(text=TEXT + " Third.", id_="same")
    ours.insert(again)
    theirs.insert(again)
    assert held(ours) == held(theirs) and len(held(ours)["same"]) == 3
    loaded = RCCMemoryIndex.load_from_disk(ours.persist(tmp_path / "index"), model=text_rcc)
    assert held(loaded) == held(ours) and not loaded.damaged
    ours.delete_ref_doc("same", delete_from_docstore=True)
    theirs.delete_ref_doc("same", delete_from_docstore=True)
    assert held(ours) == held(theirs) == {"other": [TEXT + " Other."]} and len(ours.node_ids) == 1


def test_deleting_a_missing_document_does_what_vector_store_index_does(index, text_rcc):
    theirs = vector_index(docs())
    before, nodes = held(index), list(index.node_ids)
    for target in (index, theirs):  # nothing deleted, no error (LlamaIndex logs a warning)
        target.delete_ref_doc("no-such-doc")
        target.delete_ref_doc("no-such-doc", delete_from_docstore=True)
    assert held(index) == before == held(theirs) and index.node_ids == nodes
