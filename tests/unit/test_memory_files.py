"""Memory files: safetensors round trips, corruption, and memories from other models."""

import dataclasses
import io
import json
import random
import struct

import pytest
import torch
from safetensors.torch import save_file

from rcc_model import CompressedMemory, MemoryFileError, MemoryMismatchError
from tests.conftest import make_rcc, randomize_bridges
from tests.unit.test_modeling import random_ids


@pytest.fixture()
def memory():
    return make_rcc().compress(random_ids(40))


@pytest.mark.parametrize("dtype", [None, "bfloat16", "float16"])
def test_save_load_round_trip_keeps_states_and_metadata(tmp_path, memory, dtype):
    path = memory.save(tmp_path / "doc.rccmem", dtype=dtype)
    loaded = CompressedMemory.load(path)
    for name in ("fingerprint", "base", "rate", "window", "padding", "window_tokens", "token_count",
                 "source_hash"):
        assert getattr(loaded, name) == getattr(memory, name)
    tolerance = 0 if dtype is None else 1e-2
    assert str(loaded.dtype) == f"torch.{dtype or 'float32'}"
    torch.testing.assert_close(loaded.states.float(), memory.states, atol=tolerance, rtol=tolerance)


def test_int8_storage_halves_bfloat16_bytes_and_stays_within_one_percent(tmp_path, memory):
    int8 = memory.save(tmp_path / "q.rccmem", dtype="int8")
    bf16 = memory.save(tmp_path / "b.rccmem", dtype="bfloat16")
    assert int8.stat().st_size < 0.6 * bf16.stat().st_size + 2048
    loaded = CompressedMemory.load(int8)
    error = (loaded.states - memory.states).norm() / memory.states.norm()
    assert error < 0.01


@pytest.mark.parametrize("dtype", [None, "bfloat16", "int8"])
def test_stored_as_is_what_a_file_saved_at_that_dtype_reads_back(tmp_path, memory, dtype):
    loaded = CompressedMemory.load(memory.save(tmp_path / "doc.rccmem", dtype=dtype))
    stored = memory.stored_as(dtype)
    assert stored.dtype == loaded.dtype and torch.equal(stored.states, loaded.states)
    assert dtype is None or not torch.equal(stored.states, memory.states)
    with pytest.raises(ValueError, match="int4"):
        memory.stored_as("int4")


def test_a_truncated_file_is_a_clear_error(tmp_path, memory):
    path = memory.save(tmp_path / "doc.rccmem")
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(MemoryFileError, match="truncated or corrupted"):
        CompressedMemory.load(path)


def test_garbage_is_a_clear_error(tmp_path):
    path = tmp_path / "junk.rccmem"
    path.write_bytes(b"\x00" * 64)
    with pytest.raises(MemoryFileError):
        CompressedMemory.load(path)


def test_a_safetensors_file_that_is_not_memory_is_rejected(tmp_path):
    path = tmp_path / "weights.safetensors"
    save_file({"states": torch.zeros(2, 2, 2)}, str(path))
    with pytest.raises(MemoryFileError, match="not an RCC memory file"):
        CompressedMemory.load(path)


def test_inconsistent_metadata_is_rejected(tmp_path, memory):
    header = {"format": "rcc-memory", "format_version": 1, "fingerprint": "x", "base": "b", "rate": 4,
              "window": 16, "padding": "masked", "window_tokens": [16, 16], "token_count": 32,
              "source_hash": "h", "dtype": "float32"}
    path = tmp_path / "bad.rccmem"
    save_file({"states": torch.zeros(3, 3, 32)}, str(path), metadata={"rcc": json.dumps(header)})
    with pytest.raises(MemoryFileError, match="inconsistent"):
        CompressedMemory.load(path)


def test_a_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(MemoryFileError, match="does not exist"):
        CompressedMemory.load(tmp_path / "nothing.rccmem")


def test_a_failed_save_keeps_the_previous_file(tmp_path, memory, monkeypatch):
    path = memory.save(tmp_path / "doc.rccmem")
    before = path.read_bytes()

    def explode(out, *args, **kwargs):
        out.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr("rcc_model.memory._write_safetensors", explode)
    with pytest.raises(OSError):
        memory.save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["doc.rccmem"]


def test_concat_reads_documents_in_order(memory):
    model = make_rcc()
    other = model.compress(random_ids(9, seed=5))
    both = CompressedMemory.concat([memory, other])
    assert both.num_slots == memory.num_slots + other.num_slots
    assert both.token_count == 49 and both.window_tokens == memory.window_tokens + other.window_tokens
    assert len(both) == both.num_slots
    assert [w.token_count for w in both.windows()] == [16, 16, 8, 9]
    assert CompressedMemory.concat([memory]) is memory  # one memory reads itself: no copy


def test_concat_refuses_memories_of_different_models(memory):
    other = randomize_bridges(make_rcc()).compress(random_ids(9))
    with pytest.raises(MemoryMismatchError, match="fingerprint"):
        CompressedMemory.concat([memory, other])


@pytest.mark.parametrize("dtype", [None, "int8"])
def test_bytes_round_trip_like_files(memory, dtype):
    loaded = CompressedMemory.from_bytes(memory.to_bytes(dtype=dtype))
    assert (loaded.fingerprint, loaded.window_tokens, loaded.source_hash) == (
        memory.fingerprint, memory.window_tokens, memory.source_hash)
    torch.testing.assert_close(loaded.states, memory.states, atol=0 if dtype is None else 0.05, rtol=0.02)


@pytest.mark.parametrize("damage", [lambda b: b[:-50], lambda b: b[:6], lambda b: b"\x00" * 64, lambda b: b""])
def test_damaged_bytes_are_a_clear_error(memory, damage):
    with pytest.raises(MemoryFileError):
        CompressedMemory.from_bytes(damage(memory.to_bytes()))


def test_kept_window_texts_travel_with_the_memory(tmp_path, text_rcc):
    text = "The harbour office keeps a ledger of every ship. " * 10
    memory = text_rcc.compress(text)  # kept by default, where the model has a tokenizer
    assert memory.window_texts == text_rcc.window_texts(text) and memory.num_windows > 2
    assert text_rcc.compress(text, keep_text=False).window_texts is None  # slots only, on request
    for loaded in (CompressedMemory.load(memory.save(tmp_path / "doc.rccmem")),
                   CompressedMemory.from_bytes(memory.to_bytes("int8"))):
        assert loaded.window_texts == memory.window_texts
    assert [w.window_texts for w in memory.windows()] == [[t] for t in memory.window_texts]
    both = CompressedMemory.concat([memory, memory])
    assert both.window_texts == memory.window_texts * 2
    assert CompressedMemory.concat([memory, text_rcc.compress(text, keep_text=False)]).window_texts is None
    with pytest.raises(ValueError, match="window texts"):
        dataclasses.replace(memory, window_texts=memory.window_texts[1:])


def test_an_outline_is_the_memory_without_its_states(text_rcc):
    text = "The harbour office keeps a ledger of every ship. " * 10
    memory, outline = text_rcc.compress(text), text_rcc.outline(text)
    assert outline.states.is_meta and outline.states.shape == memory.states.shape
    assert same_memory(dataclasses.replace(outline, states=memory.states), memory)
    assert [w.num_slots for w in outline.windows()] == [w.num_slots for w in memory.windows()]


# ------------------------------------------------------------------ checksum and malformed headers
def same_memory(a: CompressedMemory, b: CompressedMemory) -> bool:
    fields = [f.name for f in dataclasses.fields(CompressedMemory) if f.name != "states"]
    return a.states.dtype == b.states.dtype and torch.equal(a.states, b.states) and all(
        getattr(a, name) == getattr(b, name) for name in fields)


@pytest.mark.parametrize(("dtype", "flips"), [(None, 300), ("int8", 100)])
def test_random_bit_flips_load_the_same_memory_or_raise_memory_file_error(text_rcc, dtype, flips):
    """Seeded flips of one bit, half in the header (lengths, layout, metadata), half in the tensor data: each file
    loads exactly what was saved or is a MemoryFileError; a flipped data bit never loads."""
    memory = text_rcc.compress("The harbour office keeps a ledger of every ship. " * 4, keep_text=True)
    data = memory.to_bytes(dtype)
    saved = CompressedMemory.from_bytes(data)
    header_end = 8 + struct.unpack("<Q", data[:8])[0]
    rng, loaded = random.Random(46), 0
    for i in range(flips):
        position = rng.randrange(header_end) if i % 2 else rng.randrange(header_end, len(data))
        damaged = bytearray(data)
        damaged[position] ^= 1 << rng.randrange(8)
        try:
            result = CompressedMemory.from_bytes(bytes(damaged))
        except MemoryFileError:
            continue
        assert position < header_end and same_memory(result, saved), f"flip at byte {position} loaded altered"
        loaded += 1
    assert loaded < flips // 4  # nearly every flip is caught, not read past


def test_a_flipped_bit_in_a_file_is_refused_by_its_checksum(tmp_path, memory):
    path = memory.save(tmp_path / "doc.rccmem")
    data = bytearray(path.read_bytes())
    data[-7] ^= 0x10  # one bit of the states
    path.write_bytes(bytes(data))
    with pytest.raises(MemoryFileError, match="checksum does not match"):
        CompressedMemory.load(path)


def crafted_bytes(memory: CompressedMemory, tensors: dict | None = None, metadata: dict | None = None,
                  **header) -> bytes:
    """A memory file with a crafted header and tensors and a valid checksum: damage a checksum cannot catch."""
    from rcc_model.memory import _write_safetensors

    tensors = {"states": memory.states} if tensors is None else tensors
    rcc = {**json.loads(memory._serialisable(None)[2]["rcc"]), **header}
    out = io.BytesIO()
    _write_safetensors(out, {name: (t.dtype, tuple(t.shape)) for name, t in tensors.items()},
                       lambda name: iter([tensors[name]]), {"rcc": json.dumps(rcc)} if metadata is None else metadata)
    return out.getvalue()


@pytest.mark.parametrize(("case", "match"), [
    ({"metadata": {"rcc": "null"}}, "not an RCC memory file"),
    ({"metadata": {"rcc": "[1, 2]"}}, "not an RCC memory file"),
    ({"format_version": "2"}, "format_version is '2'"),
    ({"format_version": None}, "format_version is None"),
    ({"format_version": 99}, "newer rcc"),
    ({"rate": 0}, "rate=0"),
    ({"rate": "4"}, "'rate' is '4'"),
    ({"window": -16}, "window=-16"),
    ({"padding": "zeros"}, "padding='zeros'"),
    ({"dtype": "Tensor"}, "dtype 'Tensor'"),
    ({"dtype": "float64"}, "dtype 'float64'"),
    ({"dtype": "bfloat16"}, "states of shape"),  # the header says bfloat16, the tensor is float32
    ({"token_count": -1}, "token_count -1"),
    ({"token_count": 10**9}, "token_count 1000000000"),
    ({"token_count": 4.5}, "'token_count' is 4.5"),
    ({"window_tokens": [100, -60]}, "window_tokens"),
    ({"window_tokens": "16"}, "'window_tokens' is '16'"),
    ({"window_tokens": [16, 16, "8"]}, "window_tokens"),
    ({"window_tokens": [16, 16]}, "token_count 40 is not within its windows' 32 tokens"),
    ({"window_tokens": [16, 16, 8, 0]}, "window_tokens"),
    ({"window_tokens": [16, 16, 8, 4]}, "inconsistent"),  # 10 slots for windows that need 11
    ({"window_texts": 5}, "window_texts"),
    ({"extra": None}, "extra"),
    ({"fingerprint": None}, "'fingerprint' is None"),
    ({"tensors": {"states": torch.zeros(40, 2)}}, "states of shape"),
    ({"tensors": {"states": torch.zeros(10, 3, 32, dtype=torch.int8), "scales": torch.ones(10, 3)}}, "scales"),
    ({"tensors": {"states": torch.zeros(10, 3, 32, dtype=torch.int8), "scales": torch.ones(3, 10, 1)}}, "scales"),
    ({"tensors": {"states": torch.zeros(10, 3, 32, dtype=torch.int8)}}, "without their scales"),
    ({"tensors": {"other": torch.zeros(2)}}, "no 'states'"),
])
def test_every_malformed_header_value_is_a_memory_file_error(memory, case, match):
    data = crafted_bytes(memory, case.pop("tensors", None), case.pop("metadata", None), **case)
    with pytest.raises(MemoryFileError, match=match):
        CompressedMemory.from_bytes(data)


def test_format_1_files_from_before_the_checksum_still_load(tmp_path, memory):
    header = {**json.loads(memory._serialisable(None)[2]["rcc"]), "format_version": 1}
    path = tmp_path / "old.rccmem"
    save_file({"states": memory.states.contiguous()}, str(path), metadata={"rcc": json.dumps(header)})
    assert same_memory(CompressedMemory.load(path), memory)
    header["format_version"] = 2  # format 2 without its checksum: damaged, not old
    save_file({"states": memory.states.contiguous()}, str(path), metadata={"rcc": json.dumps(header)})
    with pytest.raises(MemoryFileError, match="checksum"):
        CompressedMemory.load(path)
