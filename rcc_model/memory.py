"""`CompressedMemory`: the slot states of compressed text, with the metadata that says what made them.

Layout: `states` is (S, K, H): S slots (one per r tokens of each window, windows in order), K encoder
hidden-state entries (embeddings + every layer), H encoder hidden size.
Files are safetensors with string metadata (no pickle), written atomically. Format 2 adds a sha256 of the header
and the tensors (`rcc_sha256`), checked on load: a flipped bit is a `MemoryFileError`, never a memory that loads
with other states or texts. Files of format 1, written before the checksum, still load, unchecked.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import struct
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import BinaryIO

import safetensors.torch
import torch
from safetensors import SafetensorError, safe_open

from rcc_model.atomic import atomic_file
from rcc_model.windows import num_slots

FORMAT = "rcc-memory"
FORMAT_VERSION = 2
_CHECKSUM = "rcc_sha256"  # metadata key of the checksum (`_digest`)
STORAGE_DTYPES = ("float32", "bfloat16", "float16", "int8")


class MemoryMismatchError(ValueError):
    """A memory was used with a model (or merged with a memory) it was not made by."""


class MemoryFileError(ValueError):
    """A memory file is missing, truncated, corrupted (its checksum does not match, a header value is malformed)
    or not an RCC memory file."""


@dataclass
class CompressedMemory:
    """Compressed text: `states` (S, K, H) plus what is needed to check and read it.

    `window_tokens[i]` is how many tokens window i was encoded from; its slots are the next
    ceil(window_tokens[i] / rate) rows of `states`. `window_texts`, when kept (`RCCModel.compress(...,
    keep_text=True)`), is the text of each window: what lets a reader rank the windows of a memory larger than
    it reads well against a question (`rcc_model.reading`), read the best as text and the rest at other slot
    alignments. Kept by default (a few bytes per token beside the slots' kilobytes); `keep_text=False` drops it.
    """

    states: torch.Tensor
    fingerprint: str
    base: str
    rate: int
    window: int
    padding: str
    window_tokens: list[int]
    token_count: int
    source_hash: str
    extra: dict[str, str] = field(default_factory=dict)
    window_texts: list[str] | None = None

    def __post_init__(self) -> None:
        if self.states.dim() != 3:
            raise ValueError(f"memory states must be (slots, entries, hidden), got shape {tuple(self.states.shape)}")
        expected = sum(num_slots(n, self.rate) for n in self.window_tokens)
        if expected != self.states.shape[0]:
            raise ValueError(
                f"memory holds {self.states.shape[0]} slots but its windows {self.window_tokens} need {expected}"
            )
        if self.window_texts is not None and len(self.window_texts) != len(self.window_tokens):
            raise ValueError(f"a memory of {len(self.window_tokens)} windows given {len(self.window_texts)} "
                             "window texts")

    def __len__(self) -> int:
        return self.num_slots

    def __repr__(self) -> str:
        return (f"CompressedMemory(tokens={self.token_count}, slots={self.num_slots}, rate={self.rate}, "
                f"window={self.window}, dtype={self.dtype}, nbytes={self.nbytes}, model={self.fingerprint})")

    @property
    def num_slots(self) -> int:
        return self.states.shape[0]

    @property
    def num_windows(self) -> int:
        return len(self.window_tokens)

    @property
    def alignments(self) -> int:
        """Slot alignments an answer reads this memory at: one, as stored (`MemoryViews` holds more)."""
        return 1

    @property
    def nbytes(self) -> int:
        return self.states.numel() * self.states.element_size()

    @property
    def dtype(self) -> torch.dtype:
        return self.states.dtype

    def windows(self) -> list[CompressedMemory]:
        """One memory per encoder window, in order (each window's slots only depend on its own text)."""
        sizes = [num_slots(n, self.rate) for n in self.window_tokens]
        texts = self.window_texts or [None] * len(sizes)
        return [
            replace(self, states=states, window_tokens=[n], token_count=n, extra={},
                    window_texts=None if text is None else [text])
            for states, n, text in zip(torch.split(self.states, sizes), self.window_tokens, texts)
        ]

    def to(self, *args, **kwargs) -> CompressedMemory:
        return replace(self, states=self.states.to(*args, **kwargs))

    @classmethod
    def concat(cls, memories: Sequence[CompressedMemory]) -> CompressedMemory:
        """One memory reading several, in order; all must come from the same model and settings. One memory is
        returned as it is, not copied."""
        if not memories:
            raise ValueError("concat needs at least one memory")
        first = memories[0]
        if len(memories) == 1:
            return first
        for other in memories[1:]:
            for name in ("fingerprint", "rate", "window", "padding"):
                if getattr(other, name) != getattr(first, name):
                    raise MemoryMismatchError(
                        f"cannot concatenate memories with different {name}: "
                        f"{getattr(first, name)!r} vs {getattr(other, name)!r}"
                    )
        digest = hashlib.sha256("".join(m.source_hash for m in memories).encode()).hexdigest()
        return replace(
            first,
            states=torch.cat([m.states.to(first.dtype) for m in memories]),
            window_tokens=[n for m in memories for n in m.window_tokens],
            token_count=sum(m.token_count for m in memories),
            source_hash=digest,
            extra={},
            window_texts=None if any(m.window_texts is None for m in memories)
            else [t for m in memories for t in m.window_texts],
        )

    def _storage(self, dtype: str | None) -> str:
        """The storage dtype a file saved with `dtype` holds (None: the states' own)."""
        storage = dtype or str(self.dtype).removeprefix("torch.")
        if storage not in STORAGE_DTYPES:
            raise ValueError(f"storage dtype must be one of {STORAGE_DTYPES}, got {storage!r}")
        return storage

    def stored_as(self, dtype: str | None) -> CompressedMemory:
        """This memory as a file saved with `dtype` (see `_serialisable`) reads back, without writing one: what
        an index that persists at `dtype` answers from before it is persisted as after it is reloaded."""
        storage = self._storage(dtype)
        if storage != "int8":
            return self.to(dtype=getattr(torch, storage))
        states = torch.empty_like(self.states)
        for rows in _row_chunks(states):
            block = self.states[rows].detach()
            scales = int8_scales(block)
            states[rows] = (int8_values(block, scales).float() * scales).to(states.dtype)
        return replace(self, states=states)

    def _serialisable(self, dtype: str | None) -> tuple[torch.dtype, torch.Tensor | None, dict[str, str]]:
        """(stored dtype of the states, int8 scales or None, string metadata) of the safetensors form.
        `dtype="int8"` stores per-vector absmax int8 with float32 scales (half the bytes of bfloat16); the default
        keeps the states' own dtype. Scales are computed a block of slots at a time (`_row_chunks`)."""
        storage = self._storage(dtype)
        scales = None
        if storage == "int8":
            states = self.states.detach()
            scales = torch.empty((*states.shape[:2], 1), dtype=torch.float32)
            for rows in _row_chunks(states):
                scales[rows] = int8_scales(states[rows]).cpu()
        header = {
            "format": FORMAT, "format_version": FORMAT_VERSION, "fingerprint": self.fingerprint,
            "base": self.base, "rate": self.rate, "window": self.window, "padding": self.padding,
            "window_tokens": self.window_tokens, "token_count": self.token_count, "source_hash": self.source_hash,
            "dtype": str(self.dtype).removeprefix("torch.") if scales is not None else storage,
            "extra": self.extra, "window_texts": self.window_texts,
        }
        return getattr(torch, storage), scales, {"rcc": json.dumps(header)}

    def _write(self, out: BinaryIO, dtype: str | None) -> None:
        """Write the safetensors form to `out`, converting the states a block of slots at a time: saving needs
        little more memory than one block, not several float32 copies of the whole memory."""
        storage, scales, metadata = self._serialisable(dtype)
        states = self.states.detach()  # moved to the CPU a block at a time
        layout = {"states": (storage, tuple(states.shape))}
        if scales is not None:
            layout["scales"] = (scales.dtype, tuple(scales.shape))

        def blocks(name: str) -> Iterator[torch.Tensor]:
            if name == "scales":
                yield scales
                return
            for rows in _row_chunks(states):
                block = states[rows].cpu()
                yield block.to(storage) if scales is None else int8_values(block, scales[rows])

        _write_safetensors(out, layout, blocks, metadata)

    def save(self, path: str | Path, dtype: str | None = None) -> Path:
        """Write to a safetensors file, atomically (see `_serialisable` for `dtype`); a symbolic link `path` is
        kept and the file it points to written. Returns `path`."""
        with atomic_file(path) as tmp, tmp.open("wb") as out:
            self._write(out, dtype)
        return Path(path)

    def to_bytes(self, dtype: str | None = None) -> bytes:
        """The file's bytes, for key-value stores (LangChain `ByteStore`s, caches)."""
        out = io.BytesIO()
        self._write(out, dtype)
        return out.getvalue()

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> CompressedMemory:
        """The memory a file holds, exactly as saved; anything else is a `MemoryFileError` saying why."""
        path = Path(path)
        if not path.is_file():
            raise MemoryFileError(f"memory file {path} does not exist")
        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                metadata = f.metadata() or {}
                tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118 (not a dict)
        except (SafetensorError, OSError, RuntimeError, ValueError) as e:
            raise MemoryFileError(f"{path} is not a readable memory file (truncated or corrupted?): {e}") from e
        return cls._from_parts(tensors, metadata, str(path), device)

    @classmethod
    def from_bytes(cls, data: bytes, device: str | torch.device = "cpu") -> CompressedMemory:
        """The inverse of `to_bytes`; damaged bytes raise `MemoryFileError`."""
        try:
            (length,) = struct.unpack("<Q", data[:8])
            metadata = json.loads(data[8:8 + length]).get("__metadata__") or {}
            tensors = safetensors.torch.load(data)
        except (SafetensorError, struct.error, ValueError, RuntimeError, AttributeError) as e:
            raise MemoryFileError(f"not readable memory bytes (truncated or corrupted?): {e}") from e
        return cls._from_parts(tensors, metadata, "memory bytes", device)

    @classmethod
    def _from_parts(cls, tensors: dict[str, torch.Tensor], metadata: dict[str, str], source: str,
                    device: str | torch.device) -> CompressedMemory:
        header = _header(tensors, metadata, source)
        states = tensors["states"]
        try:
            if states.dtype == torch.int8:
                states = states.float() * tensors["scales"]
            return cls(
                states=states.to(device=device, dtype=getattr(torch, header["dtype"])),
                fingerprint=header["fingerprint"], base=header["base"], rate=header["rate"],
                window=header["window"], padding=header["padding"], window_tokens=header["window_tokens"],
                token_count=header["token_count"], source_hash=header["source_hash"], extra=header["extra"],
                window_texts=header["window_texts"],
            )
        except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as e:
            raise MemoryFileError(f"{source}: inconsistent memory file: {e}") from e


_HEADER_TYPES = {"fingerprint": str, "base": str, "rate": int, "window": int, "padding": str, "window_tokens": list,
                 "token_count": int, "source_hash": str, "dtype": str}


def int8_scales(states: torch.Tensor) -> torch.Tensor:
    """Per-vector absmax scales of (S, K, H) states for int8 storage: (S, K, 1) float32."""
    return states.float().abs().amax(dim=-1, keepdim=True).clamp_min(1e-12) / 127.0


def int8_values(states: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """(S, K, H) states as int8 under their `int8_scales`; `values.float() * scales` reads them back."""
    return torch.round(states.float() / scales).to(torch.int8)


def _header(tensors: dict[str, torch.Tensor], metadata: dict[str, str], source: str) -> dict:
    """The checked header of a memory file: checksum (format 2), format, every value's type and range, and the
    tensors it describes; any fault a `MemoryFileError` naming it."""
    def fault(what: str) -> MemoryFileError:
        return MemoryFileError(f"{source}: {what}; the memory file is damaged: save or compress it again")

    raw = metadata.get("rcc") if isinstance(metadata, dict) else None
    try:
        header = json.loads(raw) if isinstance(raw, str) else None
    except json.JSONDecodeError as e:
        raise MemoryFileError(f"{source}: memory metadata is corrupted: {e}") from e
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise MemoryFileError(f"{source} is safetensors but not an RCC memory file")
    version = header.get("format_version")
    if type(version) is not int or version < 1:
        raise fault(f"format_version is {version!r}, not a format number")
    if version > FORMAT_VERSION:
        raise MemoryFileError(f"{source} was written by a newer rcc (format {version}): upgrade rcc to read it")
    checked = _CHECKSUM in metadata or version >= 2  # format 1 files, from before the checksum, have none
    if checked and metadata.get(_CHECKSUM) != _digest(metadata, tensors, source):
        raise fault("its checksum does not match its contents")
    for key, kind in _HEADER_TYPES.items():
        if type(header.get(key)) is not kind:
            raise fault(f"{key!r} is {header.get(key)!r}, not a {kind.__name__}")
    windows, texts, extra = header["window_tokens"], header.get("window_texts"), header.get("extra", {})
    if header["rate"] < 1 or header["window"] < 1 or header["padding"] not in ("masked", "tile"):
        raise fault(f"rate={header['rate']}, window={header['window']}, padding={header['padding']!r}")
    if not all(type(n) is int and 1 <= n <= header["window"] for n in windows):
        raise fault(f"window_tokens {windows[:8]} are not token counts of windows of {header['window']}")
    if not 0 <= header["token_count"] <= sum(windows):
        raise fault(f"token_count {header['token_count']} is not within its windows' {sum(windows)} tokens")
    if texts is not None and not (isinstance(texts, list) and all(isinstance(t, str) for t in texts)):
        raise fault("window_texts are not a list of texts")
    if not (isinstance(extra, dict) and all(isinstance(v, str) for v in extra.values())):
        raise fault("extra is not a mapping of strings")
    if header["dtype"] not in STORAGE_DTYPES[:3]:
        raise fault(f"dtype {header['dtype']!r} is not one of {STORAGE_DTYPES[:3]}")
    states = tensors.get("states")
    if states is None:
        raise MemoryFileError(f"{source} has no 'states' tensor")
    if states.dim() != 3 or states.dtype not in (getattr(torch, header["dtype"]), torch.int8):
        raise fault(f"states of shape {tuple(states.shape)} and {states.dtype}, not (slots, entries, hidden) "
                    f"of {header['dtype']} or int8")
    if states.dtype == torch.int8:
        scales = tensors.get("scales")
        if scales is None:
            raise MemoryFileError(f"{source}: int8 states without their scales")
        if scales.dtype != torch.float32 or tuple(scales.shape) != (*states.shape[:2], 1):
            raise fault(f"int8 scales of shape {tuple(scales.shape)} and {scales.dtype}, not "
                        f"{(*states.shape[:2], 1)} float32")
    return {**header, "extra": dict(extra), "window_texts": texts}


def _digest(metadata: dict[str, str], tensors: dict[str, torch.Tensor], source: str) -> str:
    """sha256 of a memory file's metadata (less the checksum itself) and of each tensor's name, dtype, shape and
    bytes, in file order: what format 2 stores as `rcc_sha256`."""
    digest = hashlib.sha256(json.dumps({k: v for k, v in metadata.items() if k != _CHECKSUM}, sort_keys=True).encode())
    for name in _file_order({name: t.dtype for name, t in tensors.items()}):
        tensor = tensors[name]
        if tensor.dtype not in _SAFETENSORS_DTYPES:
            raise MemoryFileError(f"{source}: tensor {name!r} has dtype {tensor.dtype}, which memory files do not "
                                  "hold; the memory file is damaged: save or compress it again")
        _digest_tensor(digest, name, tensor.dtype, tuple(tensor.shape))
        digest.update(tensor.contiguous().reshape(-1).view(torch.uint8).numpy().data)
    return digest.hexdigest()


def _digest_tensor(digest, name: str, dtype: torch.dtype, shape: tuple[int, ...]) -> None:
    digest.update(f"{name}|{_SAFETENSORS_DTYPES[dtype]}|{list(shape)}\n".encode())


def _file_order(dtypes: dict[str, torch.dtype]) -> list[str]:
    """Tensor names in the order safetensors lays them out: larger dtypes first, then by name."""
    return sorted(dtypes, key=lambda name: (-dtypes[name].itemsize, name))


_BLOCK_BYTES = 16 << 20  # float32 bytes of the slots converted at a time when a memory is saved


def _row_chunks(states: torch.Tensor) -> Iterator[slice]:
    """Slices of whole slots holding about `_BLOCK_BYTES` of float32 each."""
    per_row = max(1, states[:1].numel() * 4)
    step = max(1, _BLOCK_BYTES // per_row)
    for start in range(0, states.shape[0], step):
        yield slice(start, start + step)


_SAFETENSORS_DTYPES = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16", torch.int8: "I8"}


def _write_safetensors(out: BinaryIO, layout: dict[str, tuple[torch.dtype, tuple[int, ...]]],
                      blocks: Callable[[str], Iterator[torch.Tensor]], metadata: dict[str, str]) -> None:
    """Write a safetensors file (the format safetensors' own writer produces) whose tensors, named with dtype and
    shape in `layout`, arrive as `blocks(name)`: contiguous row blocks in order, so no tensor need be whole in
    memory at once. Tensors are laid out as safetensors lays them out: larger dtypes first, then by name. The
    metadata gets the checksum of everything (`_digest`), computed as the blocks pass and written into its
    place in the header at the end (`out` must be seekable)."""
    order = _file_order({name: dtype for name, (dtype, _) in layout.items()})
    digest = hashlib.sha256(json.dumps(metadata, sort_keys=True).encode())
    header: dict[str, object] = {"__metadata__": {**metadata, _CHECKSUM: "0" * 64}}
    offset = 0
    for name in order:
        dtype, shape = layout[name]
        size = math.prod(shape) * dtype.itemsize
        header[name] = {"dtype": _SAFETENSORS_DTYPES[dtype], "shape": list(shape), "data_offsets": [offset,
                                                                                                   offset + size]}
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the data starts 8-byte aligned
    start = out.tell()
    out.write(struct.pack("<Q", len(raw)) + raw)
    for name in order:
        written = 0
        _digest_tensor(digest, name, *layout[name])
        for block in blocks(name):
            data = block.contiguous().reshape(-1).view(torch.uint8).numpy().data
            out.write(data)
            digest.update(data)
            written += block.numel() * block.element_size()
        expected = header[name]["data_offsets"][1] - header[name]["data_offsets"][0]  # type: ignore[index]
        if written != expected:
            raise ValueError(f"tensor {name!r} gave {written} bytes, its layout {layout[name]} needs {expected}")
    end = out.tell()
    out.seek(start + 8 + raw.index(f'"{_CHECKSUM}":"'.encode()) + len(_CHECKSUM) + 4)
    out.write(digest.hexdigest().encode())
    out.seek(end)


@dataclass(frozen=True)
class MemoryViews:
    """The same text compressed at several slot alignments (`rcc_model.aligned_views`), read as one memory: at
    each step the decoder's next-token log-probabilities under every view are averaged and one token is
    chosen for all.

    Why: a slot holds r tokens in one state and blurs their order, which prose forgives and codes do not
    (27166 read for 27611). Another alignment puts the same tokens in other slots, and the views disagree
    where one is unsure. `views[0]` is the memory as stored.
    """

    views: tuple[CompressedMemory, ...]

    def __post_init__(self) -> None:
        if not self.views:
            raise ValueError("MemoryViews needs at least one memory")
        if len({m.fingerprint for m in self.views}) != 1:
            raise MemoryMismatchError("the views of one memory must come from one model")

    @property
    def num_slots(self) -> int:
        """Slots of the memory as stored (the other views hold as many, plus one per window read)."""
        return self.views[0].num_slots

    @property
    def alignments(self) -> int:
        """Slot alignments an answer reads: one per view."""
        return len(self.views)

    @property
    def token_count(self) -> int:
        return self.views[0].token_count
