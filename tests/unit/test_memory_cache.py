"""MemoryCache: compressed once, read back from disk, bounded in bytes with the least recently used out first."""

import threading

import pytest
import torch

from rcc_model import CompressedMemory, MemoryCache
from tests.conftest import make_rcc
from tests.unit.test_modeling import random_ids


@pytest.fixture()
def model():
    return make_rcc()


def maker(model, ids: list[int], calls: list[int]):
    def make() -> CompressedMemory:
        calls.append(1)
        return model.compress(ids)
    return make


def test_a_memory_is_compressed_once_then_read_from_disk_as_its_first_read_gave_it(model, tmp_path):
    cache, calls, ids = MemoryCache(tmp_path / "cache"), [], random_ids(40)
    key = MemoryCache.key(model.fingerprint, 4, ids)
    first = cache.fetch(key, maker(model, ids, calls))
    again = MemoryCache(tmp_path / "cache").fetch(key, maker(model, ids, calls))  # another process's view
    assert calls == [1] and torch.equal(first.states, again.states)
    assert torch.equal(first.states, model.compress(ids).stored_as("int8").states)  # as an int8 file reads back
    assert (cache.hits, cache.misses) == (0, 1) and len(list((tmp_path / "cache").iterdir())) == 1
    wider = MemoryCache(tmp_path / "cache", dtype="bfloat16").fetch(key, maker(model, ids, calls))  # not the int8 one
    assert calls == [1, 1] and torch.equal(wider.states, model.compress(ids).stored_as("bfloat16").states)



def test_fetch_many_compresses_only_the_missing_keys_in_one_call_and_keeps_their_order(model, tmp_path):
    cache, texts = MemoryCache(tmp_path / "cache"), [random_ids(24, seed=seed) for seed in range(3)]
    keys = [MemoryCache.key(model.fingerprint, 4, ids) for ids in texts]
    cache.fetch(keys[1], lambda: model.compress(texts[1]))
    asked: list[list[int]] = []

    def make(missing: list[int]) -> list[CompressedMemory]:
        asked.append(missing)
        return model.compress([texts[i] for i in missing])

    got = cache.fetch_many(keys, make)
    assert asked == [[0, 2]] and (cache.hits, cache.misses) == (1, 3)
    for ids, memory in zip(texts, got):
        assert torch.equal(memory.states, model.compress(ids).stored_as("int8").states)
    again, sources = [], [texts[0], texts[2], texts[0]]  # a key given twice (a window a document repeats)

    def make_again(missing: list[int]) -> list[CompressedMemory]:
        again.append(missing)
        return model.compress([sources[i] for i in missing])

    twice = MemoryCache(tmp_path / "twice").fetch_many([keys[0], keys[2], keys[0]], make_again)
    assert again == [[0, 1]] and twice[0] is twice[2]  # made once, at its first index
    assert torch.equal(twice[2].states, got[0].states) and torch.equal(twice[1].states, got[2].states)
    with pytest.raises(ValueError, match="returned 0 memories for 1 missing"):
        MemoryCache(tmp_path / "other").fetch_many(keys[:1], lambda missing: [])

def test_the_least_recently_used_entries_go_first_and_the_folder_stays_within_its_bytes(model, tmp_path):
    docs = {name: random_ids(40, seed=i) for i, name in enumerate("abc")}
    keys = {name: MemoryCache.key(name) for name in docs}
    probe = MemoryCache(tmp_path / "probe")
    probe.fetch(keys["a"], lambda: model.compress(docs["a"]))
    cache = MemoryCache(tmp_path / "cache", max_bytes=2 * probe.nbytes + probe.nbytes // 2)  # room for two
    calls: list[int] = []
    for name in ("a", "b", "a", "c"):  # reading a again makes b the least recently used
        cache.fetch(keys[name], maker(model, docs[name], calls))
    assert len(calls) == 3 and cache.nbytes <= cache.max_bytes
    assert sorted(p.name.split(".")[0] for p in (tmp_path / "cache").iterdir()) == sorted([keys["a"], keys["c"]])
    small = MemoryCache(tmp_path / "small", max_bytes=16)  # too small for any entry: read, never kept
    assert small.fetch(keys["a"], lambda: model.compress(docs["a"])).num_slots > 0 and small.nbytes == 0


def test_a_damaged_entry_is_compressed_again(model, tmp_path, caplog):
    cache, calls, ids = MemoryCache(tmp_path), [], random_ids(40)
    cache.fetch("ab", maker(model, ids, calls))
    (tmp_path / "ab.int8.rccmem").write_bytes(b"garbage")
    assert torch.equal(cache.fetch("ab", maker(model, ids, calls)).states, model.compress(ids).stored_as("int8").states)
    assert len(calls) == 2 and "unreadable" in caplog.text


def test_a_folder_that_cannot_be_written_answers_uncached_with_a_warning(model, tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("a file where the cache folder should be")
    cache, calls, ids = MemoryCache(blocked / "cache"), [], random_ids(40)
    with pytest.warns(UserWarning, match="cannot be written"):
        memory = cache.fetch("ab", maker(model, ids, calls))
    assert torch.equal(memory.states, model.compress(ids).stored_as("int8").states) and cache.nbytes == 0


def test_threads_reading_one_missing_memory_compress_it_once(model, tmp_path):
    cache, calls, ids = MemoryCache(tmp_path), [], random_ids(40)
    results: list[CompressedMemory] = []
    threads = [threading.Thread(target=lambda: results.append(cache.fetch("cd", maker(model, ids, calls))))
               for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1 and all(torch.equal(r.states, results[0].states) for r in results)


@pytest.mark.parametrize(("kwargs", "match"), [({"max_bytes": 0}, "max_bytes"), ({"dtype": "int4"}, "int4")])
def test_bad_settings_and_keys_are_clear_errors(model, tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        MemoryCache(tmp_path, **kwargs).fetch("ab", lambda: model.compress(random_ids(10)))
    with pytest.raises(ValueError, match="hex digest"):
        MemoryCache(tmp_path).fetch("../escape", lambda: model.compress(random_ids(10)))
