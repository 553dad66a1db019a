"""Corpus reading, memory stores (sharded safetensors + manifest), resumable corpus compression, `rcc info`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from rcc_model import MemoryFileError, MemoryMismatchError, MemoryStore
from rcc_model import store as store_module
from rcc_model.cli import main
from rcc_model.corpus import Corpus, CorpusError, is_corpus
from rcc_model.store_builder import (
    PlannedDocument,
    ShardPlan,
    assign_shards,
    compress_corpus,
    default_shard_mb,
    plan_shards,
)
from tests.conftest import corpus_text


def test_a_folder_corpus_reads_every_text_file_once_by_relative_path_and_lists_what_it_skips(corpus_dir):
    corpus = Corpus(corpus_dir)
    docs = list(corpus)
    assert [d.id for d in docs] == ["doc0.txt", "doc2.txt", "doc4.txt", "sub/doc1.txt", "sub/doc3.txt",
                                    "sub/doc5.txt"]
    assert docs[3].text == corpus_text(1, 35) and docs[3].metadata["file_name"] == "doc1.txt"
    assert sorted(Path(s.split(":")[0]).name for s in corpus.skipped) == ["blank.txt", "image.bin"]
    assert corpus.read("sub/doc1.txt", docs[3].locator) == docs[3]
    assert is_corpus(corpus_dir) and is_corpus(str(corpus_dir / "*.txt")) and not is_corpus(corpus_dir / "doc0.txt")


def test_a_glob_corpus_reads_the_files_it_matches(corpus_dir):
    ids = [d.id for d in Corpus(str(corpus_dir / "**" / "doc[12].txt"))]
    assert sorted(ids) == sorted([str(corpus_dir / "doc2.txt"), str(corpus_dir / "sub" / "doc1.txt")])
    with pytest.raises(CorpusError, match="names no files"):
        Corpus(str(corpus_dir / "*.none"))


def test_a_jsonl_corpus_takes_id_text_and_metadata_and_names_the_line_of_a_bad_row(tmp_path):
    path = tmp_path / "c.jsonl"
    rows = [{"id": "a", "text": "alpha text", "metadata": {"lang": "en"}, "year": 2020}, {"id": 7, "text": "seven"},
            {"id": "empty", "text": " "}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    corpus = Corpus(path)
    docs = list(corpus)
    assert [(d.id, d.text, d.metadata) for d in docs] == [("a", "alpha text", {"lang": "en", "year": 2020}),
                                                          ("7", "seven", {})]
    assert corpus.skipped == ["empty: empty"]
    assert corpus.read("7", docs[1].locator) == docs[1]
    path.write_text(json.dumps(rows[0]) + "\n" + '{"text": "no id"}\n')
    with pytest.raises(CorpusError, match=r"at byte \d+: .*\"id\""):
        list(Corpus(path))
    path.write_text("not json\n")
    with pytest.raises(CorpusError, match="at byte 0: not a JSON object"):
        list(Corpus(path))


def _planned(tokens: list[int]) -> list[PlannedDocument]:
    return [PlannedDocument(f"d{i}", None, "", t, t // 4) for i, t in enumerate(tokens)]


def test_shards_hold_consecutive_documents_up_to_their_cap_and_processes_get_balanced_token_loads():
    shards = plan_shards(_planned([40, 40, 40, 400, 8]), shard_bytes=100, bytes_per_slot=4, first=3)
    assert [[d.id for d in s.documents] for s in shards] == [["d0", "d1"], ["d2"], ["d3"], ["d4"]]
    assert [s.index for s in shards] == [3, 4, 5, 6]
    shares = assign_shards([ShardPlan(i, tuple(_planned([t]))) for i, t in enumerate([50, 10, 30, 30, 20])], 2)
    assert [[s.index for s in share] for share in shares] == [[0, 4], [1, 2, 3]]
    assert assign_shards(shares[0], 1) == [shares[0]]
    assert [default_shard_mb(gib * 2**30) for gib in (0.01, 6.25, 100)] == [16, 100, 512]  # 1/64, within bounds


@pytest.fixture()
def tiny(tiny_checkpoint):
    from rcc_model import RCCModel

    return RCCModel.from_pretrained(tiny_checkpoint)


def _same_memory(a, b) -> None:
    assert (a.window_tokens, a.token_count, a.source_hash, a.fingerprint, a.rate, a.window_texts) == \
        (b.window_tokens, b.token_count, b.source_hash, b.fingerprint, b.rate, b.window_texts)
    torch.testing.assert_close(a.states, b.states, atol=0, rtol=0)


def test_a_store_gives_back_each_documents_memory_text_and_metadata_from_shards_within_their_cap(tiny, corpus_dir,
                                                                                                 tmp_path):
    store_path = tmp_path / "corpus.rccstore"
    report = compress_corpus(tiny, Corpus(corpus_dir), store_path, shard_mb=0.005, progress=False)
    store = MemoryStore(store_path)
    docs = list(Corpus(corpus_dir))
    assert report.documents == report.planned == len(store) == 6 and report.already_stored == 0
    assert list(store) == [d.id for d in docs] and "doc0.txt" in store and "nope" not in store
    shards = sorted((store_path / "shards").glob("shard-*"))
    assert len(shards) > 1 and all(p.stat().st_size < 0.005 * 2**20 + 2**13 for p in shards)
    for doc in docs:
        _same_memory(store[doc.id], tiny.compress(doc.text))
        assert store.text(doc.id) == doc.text and store.metadata(doc.id)["file_name"] == Path(doc.id).name
    assert tiny.ask(store["doc2.txt"], "Which code?", max_new_tokens=3) == \
        tiny.ask(tiny.compress(docs[1].text), "Which code?", max_new_tokens=3)
    with pytest.raises(KeyError, match="nope"):
        store["nope"]


def test_int8_storage_stores_fewer_bytes_and_reads_back_within_its_rounding(tiny, corpus_dir, tmp_path):
    full = compress_corpus(tiny, Corpus(corpus_dir), tmp_path / "f32", progress=False)
    small = compress_corpus(tiny, Corpus(corpus_dir), tmp_path / "i8", storage="int8", progress=False)
    a, b = MemoryStore(full.store), MemoryStore(small.store)
    k, h = a.settings.entries, a.settings.hidden
    assert (a.settings.storage, a.settings.bytes_per_slot, b.settings.bytes_per_slot) == ("bfloat16", k * h * 2,
                                                                                         k * (h + 4))
    assert b.summary()["store_bytes"] < a.summary()["store_bytes"]
    for doc_id in a:
        exact, rounded = a[doc_id].states, b[doc_id].states
        assert (exact - rounded).abs().max() <= exact.abs().amax(dim=-1, keepdim=True).max() / 127


def test_a_killed_run_resumes_where_it_stopped_and_ends_with_the_store_an_uninterrupted_run_writes(
        tiny, corpus_dir, tmp_path, monkeypatch):
    straight = tmp_path / "straight"
    compress_corpus(tiny, Corpus(corpus_dir), straight, shard_mb=0.005, progress=False)

    killed, written = tmp_path / "killed", []
    real_write = store_module.ShardWriter.write

    def write_then_die(self, path):
        if len(written) == 1:
            (path.parent / f".{path.name}.12345-ab.rcc-tmp").write_bytes(b"half a shard")  # what a kill leaves
            raise KeyboardInterrupt
        real_write(self, path)
        written.append(path.name)

    monkeypatch.setattr(store_module.ShardWriter, "write", write_then_die)
    with pytest.raises(KeyboardInterrupt):
        compress_corpus(tiny, Corpus(corpus_dir), killed, shard_mb=0.005, progress=False)
    monkeypatch.undo()
    with pytest.raises(MemoryFileError, match="run it again"):
        MemoryStore(killed)

    report = compress_corpus(tiny, Corpus(corpus_dir), killed, shard_mb=0.005, progress=False)
    done_before = sum(len(store_module.read_shard_header(killed / "shards" / n)[1]) for n in written)
    assert report.already_stored == done_before > 0 and report.planned == 6 - done_before
    assert not list((killed / "shards").glob(".shard-*"))  # the half-written shard is gone
    a, b = MemoryStore(straight), MemoryStore(killed)
    assert list(a) == list(b)
    for doc_id in a:
        _same_memory(a[doc_id], b[doc_id])

    again = compress_corpus(tiny, Corpus(corpus_dir), killed, shard_mb=0.005, progress=False)
    assert again.planned == 0 and again.already_stored == 6


def test_a_changed_document_is_compressed_again_and_supersedes_its_old_memory(tiny, corpus_dir, tmp_path):
    store_path = tmp_path / "s"
    compress_corpus(tiny, Corpus(corpus_dir), store_path, progress=False)
    (corpus_dir / "doc2.txt").write_text("a new text entirely, code 99.")
    report = compress_corpus(tiny, Corpus(corpus_dir), store_path, progress=False)
    assert report.planned == 1 and report.already_stored == 5
    store = MemoryStore(store_path)
    assert len(store) == 6 and store.text("doc2.txt") == "a new text entirely, code 99."
    _same_memory(store["doc2.txt"], tiny.compress("a new text entirely, code 99."))


def test_duplicate_ids_are_refused_before_anything_is_written(tiny, tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text('{"id": "a", "text": "one"}\n{"id": "b", "text": "two"}\n{"id": "a", "text": "three"}\n')
    with pytest.raises(CorpusError, match="'a' appears twice"):
        compress_corpus(tiny, Corpus(path), tmp_path / "s", progress=False)
    assert not (tmp_path / "s" / "manifest.json").exists()


def test_a_store_refuses_other_settings_a_damaged_shard_and_a_folder_that_is_not_a_store(tiny, tiny_checkpoint,
                                                                                         corpus_dir, tmp_path):
    from rcc_model import RCCModel

    store_path = tmp_path / "s"
    compress_corpus(tiny, Corpus(corpus_dir), store_path, progress=False)
    with pytest.raises(MemoryMismatchError, match="storage: 'bfloat16' there, 'int8' here"):
        compress_corpus(tiny, Corpus(corpus_dir), store_path, storage="int8", progress=False)
    other = RCCModel.from_pretrained(Path(tiny_checkpoint) / "r8")
    with pytest.raises(MemoryMismatchError, match="fingerprint"):
        compress_corpus(other, Corpus(corpus_dir), store_path, progress=False)

    shard = next((store_path / "shards").glob("shard-*"))
    data = bytearray(shard.read_bytes())
    data[-5] ^= 0xFF  # a flipped bit in the last document's states
    shard.write_bytes(bytes(data))
    store = MemoryStore(store_path)
    last = [doc_id for doc_id in store if store.entry(doc_id).shard == shard.name][-1]
    with pytest.raises(MemoryFileError, match="checksum"):
        store[last]

    (store_path / "manifest.json").write_text("{not json")
    with pytest.raises(MemoryFileError, match="damaged"):
        MemoryStore(store_path)
    busy = tmp_path / "mine"
    busy.mkdir()
    (busy / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not a memory store"):
        compress_corpus(tiny, Corpus(corpus_dir), busy, progress=False)
    assert (busy / "notes.txt").read_text() == "keep me"


def test_rcc_compress_writes_a_store_from_a_folder_and_rcc_info_summarises_it(tiny_checkpoint, corpus_dir, tmp_path,
                                                                               capsys):
    store_path = tmp_path / "out.rccstore"
    assert main(["compress", str(corpus_dir), "-o", str(store_path), "--model", tiny_checkpoint,
                 "--shard-size", "0.01", "--storage", "int8"]) == 0
    out = capsys.readouterr()
    assert "6 documents (6 compressed now, 0 already stored" in out.out and "image.bin" in out.err
    assert main(["info", str(store_path), "--json"]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["documents"] == 6 and facts["storage"] == "int8" and facts["rate"] == 4 and facts["shards"] > 1
    assert facts["bytes_per_token"] == pytest.approx(facts["store_bytes"] / facts["tokens"], rel=1e-3)
    assert main(["compress", str(corpus_dir), "-o", str(store_path), "--model", tiny_checkpoint, "--question",
                 "why?"]) == 2
    assert "does not apply to a corpus" in capsys.readouterr().err


def test_a_store_takes_one_writer_at_a_time(tiny, corpus_dir, tmp_path):
    store_path = tmp_path / "s"
    compress_corpus(tiny, Corpus(corpus_dir), store_path, progress=False)
    store = MemoryStore(store_path)
    extra = ("new.txt", "a new note, code 7.", {}, tiny.compress("a new note, code 7."))
    with store_module.writing(store_path):  # another writer (its lock is per open file, so this process's counts)
        with pytest.raises(ValueError, match="another rcc process is writing"):
            compress_corpus(tiny, Corpus(corpus_dir), store_path, progress=False)
        with pytest.raises(ValueError, match="another rcc process is writing"):
            store.append([extra])
    store.append([extra])  # the lock is free again
    assert "new.txt" in MemoryStore(store_path) and len(MemoryStore(store_path)) == 7
