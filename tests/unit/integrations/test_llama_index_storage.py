"""RCCMemoryIndex storage: text only by default, each window compressed when a question first reads it into a
bounded cache; int8 or wider memory persisted on request."""

import json

import pytest
import torch
from llama_index.core import Document
from pydantic import Field
from safetensors import safe_open

from rcc_integrations.llama_index import RCCMemoryIndex
from tests.conftest import corpus_text
from tests.unit.integrations.test_expanded_reading import FakeEmbedding
from tests.unit.integrations.test_llama_index_memory_index import TEXT, docs

QUESTION = "Who keeps the lighthouse?"


class RecordingEmbedding(FakeEmbedding):
    """The tests' deterministic embedding, recording every text it embeds."""

    embedded: list[str] = Field(default_factory=list)

    def _get_text_embedding(self, text):
        self.embedded.append(text)
        return super()._get_text_embedding(text)


def planted() -> list[Document]:
    return [*docs(), Document(text=TEXT + " The lighthouse keeper is Amara Quist. " + TEXT, id_="doc-9")]


def folder_bytes(folder) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def stored_dtypes(folder) -> set[str]:
    dtypes = set()
    for path in (folder / "rcc_memory").iterdir():
        with safe_open(str(path), framework="pt") as f:
            dtypes.add(str(f.get_slice("states").get_dtype()))
    return dtypes


def test_the_default_persists_text_and_no_memory(text_rcc, tmp_path):
    index = RCCMemoryIndex.from_documents(docs(), model=text_rcc)
    assert index.storage == "text" and index.engine.compressions == 0
    folder = index.persist(tmp_path / "text")
    assert not list(folder.rglob("*.rccmem"))
    assert RCCMemoryIndex.load_from_disk(folder, model=text_rcc).storage == "text"


def test_int8_persists_int8_memory_and_answers_alike_before_persist_and_after_reload(text_rcc, tmp_path):
    index = RCCMemoryIndex.from_documents(docs(), model=text_rcc, storage="int8")
    answer = str(index.as_query_engine(max_tokens=6).query("Which office keeps a ledger?"))
    assert index.storage == "int8" and stored_dtypes(index.persist(tmp_path / "int8")) == {"I8"}
    loaded = RCCMemoryIndex.load_from_disk(tmp_path / "int8", model=text_rcc)
    assert loaded.storage == "int8" and str(loaded.as_query_engine(max_tokens=6).query("Which office keeps a "
                                                                                        "ledger?")) == answer
    for node_id in index.node_ids:
        assert torch.equal(loaded.memory_of(node_id).states, index.memory_of(node_id).states)
    full = RCCMemoryIndex.from_documents(docs(), model=text_rcc, storage="float32").persist(tmp_path / "float32")
    assert stored_dtypes(full) == {"F32"}
    assert folder_bytes(tmp_path / "int8" / "rcc_memory") < folder_bytes(full / "rcc_memory")


def test_a_loaded_index_keeps_its_storage_unless_given_another(text_rcc, tmp_path):
    index = RCCMemoryIndex.from_documents(docs(), model=text_rcc, storage="bfloat16")
    folder = index.persist(tmp_path / "bf16")
    assert RCCMemoryIndex.load_from_disk(folder, model=text_rcc).storage == "bfloat16"
    recast = RCCMemoryIndex.load_from_disk(folder, model=text_rcc, storage="int8")
    for node_id in index.node_ids:  # held as an int8 persist will store it
        assert torch.equal(recast.memory_of(node_id).states, index.memory_of(node_id).stored_as("int8").states)
    assert stored_dtypes(recast.persist(tmp_path / "int8")) == {"I8"}
    with pytest.raises(ValueError, match="`storage` must be one of"):
        RCCMemoryIndex.from_documents(docs(), model=text_rcc, storage="int4")


def test_text_storage_persists_no_memory_and_compresses_the_windows_a_question_reads_when_it_first_reads_them(
        text_rcc, tmp_path):
    budget = 2 * text_rcc.config.window // text_rcc.config.rate  # two windows
    index = RCCMemoryIndex.from_documents(planted(), model=text_rcc, storage="text", cache_dir=tmp_path / "cache")
    assert index.engine.compressions == 0  # built from the tokenizer alone
    folder = index.persist(tmp_path / "text")
    assert not list(folder.rglob("*.rccmem"))
    windows = json.loads((folder / "rcc_manifest.json").read_text())["windows"]
    assert sorted(windows) == sorted(index.node_ids) and windows["doc-9:memory"]["window_texts"] == \
        index.window_texts("doc-9:memory")
    int8 = RCCMemoryIndex.from_documents(planted(), model=text_rcc, storage="int8")
    expected = int8.as_query_engine(max_tokens=4, memory_budget=budget).query(QUESTION)
    built = int8.engine.compressions

    loaded = RCCMemoryIndex.load_from_disk(folder, model=text_rcc, cache_dir=tmp_path / "cache")
    assert loaded.storage == "text"
    first = loaded.as_query_engine(max_tokens=4, memory_budget=budget).query(QUESTION)
    read = [s.node.metadata["rcc_window"] for s in first.source_nodes]
    assert {s.node.ref_doc_id for s in first.source_nodes} == {"doc-9"} and 0 < len(read) < \
        loaded.outline_of("doc-9:memory").num_windows
    assert loaded.engine.compressions == built + len(read)  # the windows read, each once, nothing else
    assert str(first) == str(expected)  # the cache holds int8 memory: answers as the int8 index does
    again = loaded.as_query_engine(max_tokens=4, memory_budget=budget).query(QUESTION)
    assert str(again) == str(first) and loaded.engine.compressions == built + len(read)
    assert (loaded.cache.hits, loaded.cache.misses) == (len(read), len(read))
    assert folder_bytes(folder) < folder_bytes(int8.persist(tmp_path / "int8"))


def test_the_cache_stays_within_its_bytes_and_a_document_evicted_is_compressed_again(text_rcc, tmp_path):
    distinct = [Document(text=corpus_text(seed, 120), id_=f"doc-{seed}") for seed in (0, 1)]  # no window shared
    index = RCCMemoryIndex.from_documents(distinct, model=text_rcc, storage="text", cache_dir=tmp_path / "cache")
    one = index.memory_of("doc-0:memory").stored_as("int8")
    whole = RCCMemoryIndex.from_documents(distinct, model=text_rcc, storage="int8").memory_of("doc-0:memory")
    assert torch.equal(one.states, whole.states)  # windows compressed apart: the memory compressed whole
    entry = folder_bytes(tmp_path / "cache")
    small = RCCMemoryIndex.from_documents(distinct, model=text_rcc, storage="text", cache_dir=tmp_path / "small",
                                          cache_bytes=entry + entry // 2)  # room for one document's windows
    compressions = small.engine.compressions
    windows = {node_id: small.outline_of(node_id).num_windows for node_id in ("doc-0:memory", "doc-1:memory")}
    assert min(windows.values()) > 1
    for node_id in ("doc-0:memory", "doc-1:memory"):
        small.memory_of(node_id)
    both = compressions + windows["doc-0:memory"] + windows["doc-1:memory"]
    assert small.engine.compressions == both and folder_bytes(tmp_path / "small") <= entry + entry // 2
    again = small.memory_of("doc-0:memory")  # the least recently used of its windows were evicted
    assert both < small.engine.compressions <= both + windows["doc-0:memory"]
    assert torch.equal(again.states, one.states)


def test_damaged_windows_in_a_text_index_are_computed_again_from_the_text(text_rcc, tmp_path):
    folder = RCCMemoryIndex.from_documents(docs(), model=text_rcc, storage="text",
                                           cache_dir=tmp_path / "cache").persist(tmp_path / "text")
    manifest = json.loads((folder / "rcc_manifest.json").read_text())
    manifest["windows"]["doc-1:memory"]["slots"] += 1
    (folder / "rcc_manifest.json").write_text(json.dumps(manifest))
    with pytest.warns(UserWarning, match="doc-1:memory.*computed again"):
        loaded = RCCMemoryIndex.load_from_disk(folder, model=text_rcc, cache_dir=tmp_path / "cache")
    fresh = RCCMemoryIndex.from_documents(docs(), model=text_rcc, storage="text", cache_dir=tmp_path / "cache")
    assert loaded.outline_of("doc-1:memory").num_slots == fresh.outline_of("doc-1:memory").num_slots
    assert loaded.window_texts("doc-1:memory") == fresh.window_texts("doc-1:memory")


def test_a_reloaded_index_takes_the_window_embeddings_it_persisted_from_the_model_that_made_them(text_rcc, tmp_path):
    budget, first = text_rcc.config.window // text_rcc.config.rate, RecordingEmbedding()
    index = RCCMemoryIndex.from_documents(planted(), model=text_rcc, storage="text", cache_dir=tmp_path / "cache",
                                          embed_model=first)
    folder = index.persist(tmp_path / "text")
    windows = {t for node_id in index.node_ids for t in index.window_texts(node_id)}
    assert set(first.embedded) == windows and len(first.embedded) == len(windows)
    expected = [n.node.node_id for n in index.as_retriever(memory_budget=budget).retrieve(QUESTION)]
    same, other = RecordingEmbedding(), RecordingEmbedding(model_name="another")
    for model in (same, other):
        loaded = RCCMemoryIndex.load_from_disk(folder, model=text_rcc, cache_dir=tmp_path / "cache",
                                               embed_model=model)
        assert [n.node.node_id for n in loaded.as_retriever(memory_budget=budget).retrieve(QUESTION)] == expected
    assert same.embedded == [QUESTION]  # the windows' vectors came from the folder
    assert set(other.embedded) == {QUESTION, *windows}  # another model's vectors are not taken
