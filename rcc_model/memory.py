"""`CompressedMemory`: the slot states of compressed text, with the metadata that says what made them.

Layout: `states` is (S, K, H): S slots (one per r tokens of each window, windows in order), K encoder
hidden-state entries (embeddings + every layer), H encoder hidden size.
Files are safetensors with string metadata (no pickle), written atomically.
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
FORMAT_VERSION = 1
_STORAGE_DTYPES = ("float32", "bfloat16", "float16", "int8")


class MemoryMismatchError(ValueError):
    """A memory was used with a model (or merged with a memory) it was not made by."""


class MemoryFileError(ValueError):
    """A memory file is missing, truncated, corrupted or not an RCC memory file."""


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

    def _serialisable(self, dtype: str | None) -> tuple[torch.dtype, torch.Tensor | None, dict[str, str]]:
        """(stored dtype of the states, int8 scales or None, string metadata) of the safetensors form.
        `dtype="int8"` stores per-vector absmax int8 with float32 scales (half the bytes of bfloat16); the default
        keeps the states' own dtype. Scales are computed a block of slots at a time (`_row_chunks`)."""
        storage = dtype or str(self.dtype).removeprefix("torch.")
        if storage not in _STORAGE_DTYPES:
            raise ValueError(f"storage dtype must be one of {_STORAGE_DTYPES}, got {storage!r}")
        scales = None
        if storage == "int8":
            states = self.states.detach()
            scales = torch.empty((*states.shape[:2], 1), dtype=torch.float32)
            for rows in _row_chunks(states):
                scales[rows] = (states[rows].float().abs().amax(dim=-1, keepdim=True).clamp_min(1e-12) / 127.0).cpu()
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
                yield block.to(storage) if scales is None else torch.round(block.float() / scales[rows]).to(storage)

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
        path = Path(path)
        if not path.is_file():
            raise MemoryFileError(f"memory file {path} does not exist")
        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                raw = (f.metadata() or {}).get("rcc")
                tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118 (not a dict)
        except (SafetensorError, OSError, RuntimeError) as e:
            raise MemoryFileError(f"{path} is not a readable memory file (truncated or corrupted?): {e}") from e
        return cls._from_parts(tensors, raw, str(path), device)

    @classmethod
    def from_bytes(cls, data: bytes, device: str | torch.device = "cpu") -> CompressedMemory:
        """The inverse of `to_bytes`; damaged bytes raise `MemoryFileError`."""
        try:
            (length,) = struct.unpack("<Q", data[:8])
            raw = json.loads(data[8:8 + length]).get("__metadata__", {}).get("rcc")
            tensors = safetensors.torch.load(data)
        except (SafetensorError, struct.error, ValueError, RuntimeError) as e:
            raise MemoryFileError(f"not readable memory bytes (truncated or corrupted?): {e}") from e
        return cls._from_parts(tensors, raw, "memory bytes", device)

    @classmethod
    def _from_parts(cls, tensors: dict[str, torch.Tensor], raw: str | None, source: str,
                    device: str | torch.device) -> CompressedMemory:
        try:
            header = json.loads(raw) if raw else {}
        except json.JSONDecodeError as e:
            raise MemoryFileError(f"{source}: memory metadata is corrupted: {e}") from e
        if header.get("format") != FORMAT:
            raise MemoryFileError(f"{source} is safetensors but not an RCC memory file")
        if header.get("format_version", 0) > FORMAT_VERSION:
            raise MemoryFileError(f"{source} was written by a newer rcc (format {header['format_version']})")
        if "states" not in tensors:
            raise MemoryFileError(f"{source} has no 'states' tensor")
        states = tensors["states"]
        if states.dtype == torch.int8 and "scales" not in tensors:
            raise MemoryFileError(f"{source}: int8 states without their scales")
        try:
            dtype = getattr(torch, header["dtype"])
            if states.dtype == torch.int8:
                states = states.float() * tensors["scales"]
            return cls(
                states=states.to(device=device, dtype=dtype), fingerprint=header["fingerprint"],
                base=header["base"], rate=int(header["rate"]), window=int(header["window"]),
                padding=header["padding"], window_tokens=[int(n) for n in header["window_tokens"]],
                token_count=int(header["token_count"]), source_hash=header["source_hash"],
                extra=dict(header.get("extra", {})), window_texts=header.get("window_texts"),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise MemoryFileError(f"{source}: inconsistent memory file: {e}") from e


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
    memory at once. Tensors are laid out as safetensors lays them out: larger dtypes first, then by name."""
    order = sorted(layout, key=lambda name: (-layout[name][0].itemsize, name))
    header: dict[str, object] = {"__metadata__": metadata}
    offset = 0
    for name in order:
        dtype, shape = layout[name]
        size = math.prod(shape) * dtype.itemsize
        header[name] = {"dtype": _SAFETENSORS_DTYPES[dtype], "shape": list(shape), "data_offsets": [offset,
                                                                                                   offset + size]}
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the data starts 8-byte aligned
    out.write(struct.pack("<Q", len(raw)) + raw)
    for name in order:
        written = 0
        for block in blocks(name):
            out.write(block.contiguous().view(torch.uint8).numpy().data)
            written += block.numel() * block.element_size()
        expected = header[name]["data_offsets"][1] - header[name]["data_offsets"][0]  # type: ignore[index]
        if written != expected:
            raise ValueError(f"tensor {name!r} gave {written} bytes, its layout {layout[name]} needs {expected}")


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
    def token_count(self) -> int:
        return self.views[0].token_count
