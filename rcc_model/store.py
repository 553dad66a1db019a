"""`MemoryStore`: the memory of a whole corpus, in sharded safetensors files with one manifest.

A store folder:

    manifest.json                    the settings of the model that made it (fingerprint, rate, window, dtype),
                                     and per document: its shard, rows, slots, tokens, text and data checksums
    shards/shard-00000.safetensors   "states" (S, K, H): the slots of many documents one after another (int8
                                     storage adds "scales" (S, K, 1)); its "rcc-store" metadata lists those
                                     documents with their text and metadata

Each shard is written whole and atomically and says what it holds, so a killed `rcc compress` loses only the
shard it was writing, and the manifest is always rebuilt from the shards. A later shard holding a document id
again (its text changed) supersedes the earlier one. Reading one document maps its shard and copies only its
rows (`safe_open(...).get_slice`), so a store larger than memory reads as fast as a small one.

Glossary: S slots, K encoder hidden-state entries (embeddings + every layer), H hidden size.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from rcc_model.atomic import atomic_file
from rcc_model.memory import CompressedMemory, MemoryFileError, MemoryMismatchError, int8_scales, int8_values

FORMAT = "rcc-memory-store"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SHARDS = "shards"
_HEADER_KEY = "rcc-store"
_OPEN_SHARDS = 8  # shard files kept mapped at once by a reader
_TEXTS = ("text", "window_texts")  # what a shard's header keeps of each document beside its entry


@dataclass(frozen=True)
class StoreSettings:
    """What every memory of a store shares: the model that made it, how it was cut, how it is stored."""

    fingerprint: str
    base: str
    rate: int
    window: int
    padding: str
    storage: str  # dtype of the stored states: float32, bfloat16, float16 or int8
    dtype: str  # dtype memories are read back in
    entries: int
    hidden: int

    @property
    def bytes_per_slot(self) -> int:
        if self.storage == "int8":
            return self.entries * (self.hidden + 4)  # int8 values + a float32 scale per vector
        return self.entries * self.hidden * torch.tensor([], dtype=getattr(torch, self.storage)).element_size()

    def check_same(self, other: StoreSettings, where: str) -> None:
        if other != self:
            changed = ", ".join(f"{k}: {v!r} there, {getattr(other, k)!r} here"
                                for k, v in asdict(self).items() if getattr(other, k) != v)
            raise MemoryMismatchError(f"{where} holds memory made with other settings ({changed}); write to another "
                                      "store, or use the model and settings that made it")


@dataclass(frozen=True)
class StoredDocument:
    """One document of a store: where its rows are, what it was compressed from, and its checksums."""

    id: str
    shard: str
    rows: tuple[int, int]
    window_tokens: tuple[int, ...]
    token_count: int
    text_sha256: str
    source_hash: str
    sha256: str  # of the stored bytes of its rows (states, then scales)
    metadata: dict[str, Any]

    @property
    def slots(self) -> int:
        return self.rows[1] - self.rows[0]

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "rows": list(self.rows), "window_tokens": list(self.window_tokens)}

    @classmethod
    def from_json(cls, row: dict[str, Any]) -> StoredDocument:
        return cls(**{**row, "rows": tuple(row["rows"]), "window_tokens": tuple(row["window_tokens"])})


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.safetensors"


def _digest(*tensors: torch.Tensor) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class ShardWriter:
    """The tensors of one shard, filled document by document in place (peak memory: the shard itself)."""

    def __init__(self, settings: StoreSettings, slots: int):
        self.settings = settings
        storage = torch.int8 if settings.storage == "int8" else getattr(torch, settings.storage)
        self.states = torch.empty(slots, settings.entries, settings.hidden, dtype=storage)
        self.scales = torch.empty(slots, settings.entries, 1) if settings.storage == "int8" else None
        self.documents: list[tuple[StoredDocument, str, list[str] | None]] = []
        self._cursor = 0

    def add(self, doc_id: str, text: str, metadata: dict[str, Any], memory: CompressedMemory) -> None:
        a, b = self._cursor, self._cursor + memory.num_slots
        states = memory.states.detach().cpu()
        if self.scales is not None:
            self.scales[a:b] = int8_scales(states)
            self.states[a:b] = int8_values(states, self.scales[a:b])
        else:
            self.states[a:b] = states
        parts = (self.states[a:b],) if self.scales is None else (self.states[a:b], self.scales[a:b])
        self.documents.append((StoredDocument(
            id=doc_id, shard="", rows=(a, b), window_tokens=tuple(memory.window_tokens),
            token_count=memory.token_count, text_sha256=hashlib.sha256(text.encode("utf-8")).hexdigest(),
            source_hash=memory.source_hash, sha256=_digest(*parts), metadata=metadata), text, memory.window_texts))
        self._cursor = b

    def write(self, path: Path) -> None:
        """Write the shard atomically (`atomic_file`); a shard is never replaced: stores have one writer at a
        time, and a shard already there means another one wrote it."""
        if self._cursor != self.states.shape[0]:
            raise RuntimeError(f"shard filled {self._cursor} of its {self.states.shape[0]} slots")
        if path.exists():  # `writing` keeps a second writer out; this is the last guard
            raise FileExistsError(f"{path} was written by another writer meanwhile: a store takes one writer at a "
                                  "time; run the command again")
        header = {"format": FORMAT, "version": FORMAT_VERSION, "settings": asdict(self.settings),
                  "documents": [{**doc.to_json(), "text": text, "window_texts": windows}
                                for doc, text, windows in self.documents]}
        tensors = {"states": self.states} if self.scales is None else {"states": self.states, "scales": self.scales}
        with atomic_file(path) as tmp:
            save_file(tensors, str(tmp), metadata={_HEADER_KEY: json.dumps(header)})


def read_shard_header(path: Path) -> tuple[StoreSettings, list[tuple[StoredDocument, dict[str, Any]]]]:
    """(settings, [(document, {"text", "window_texts"})]) of one shard file, from its header alone."""
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            raw = (f.metadata() or {}).get(_HEADER_KEY)
        header = json.loads(raw)
        if header.get("format") != FORMAT or int(header.get("version", 0)) > FORMAT_VERSION:
            raise MemoryFileError(f"{path} is not a shard this rcc reads (format {header.get('format')!r}, "
                                  f"version {header.get('version')!r})")
        settings = StoreSettings(**header["settings"])
        documents = [(StoredDocument.from_json({**{k: v for k, v in row.items() if k not in _TEXTS},
                                                "shard": path.name}), {k: row.get(k) for k in _TEXTS})
                     for row in header["documents"]]
    except MemoryFileError:
        raise
    except (SafetensorError, OSError, TypeError, KeyError, ValueError) as e:
        raise MemoryFileError(f"{path} is not a readable store shard (truncated or corrupted?): {e}") from e
    return settings, documents


def scan_shards(folder: Path) -> tuple[StoreSettings | None, dict[str, StoredDocument], int]:
    """What the shards of a store folder hold: (their settings, the latest entry of each document id, the next
    free shard number). Temporary files of a write that was killed are ignored."""
    shards = sorted((folder / SHARDS).glob("shard-*.safetensors")) if (folder / SHARDS).is_dir() else []
    settings, documents = None, {}
    for path in shards:
        shard_settings, rows = read_shard_header(path)
        if settings is None:
            settings = shard_settings
        settings.check_same(shard_settings, str(path))
        for document, _ in rows:
            documents.pop(document.id, None)  # a later shard supersedes; keeps ids in the order last written
            documents[document.id] = document
    following = int(shards[-1].name.split("-")[1].split(".")[0]) + 1 if shards else 0
    return settings, documents, following


def remove_stale_temporaries(folder: Path) -> None:
    """Delete shard files a killed write left half-written (their hidden temporaries, `.shard-*`); called while
    no process writes to the store."""
    for tmp in (folder / SHARDS).glob(".shard-*") if (folder / SHARDS).is_dir() else []:
        tmp.unlink(missing_ok=True)


def write_manifest(folder: Path) -> dict[str, Any]:
    """Rebuild `manifest.json` from the shards, atomically; returns it."""
    settings, documents, _ = scan_shards(folder)
    if settings is None:
        raise MemoryFileError(f"{folder} holds no shards")
    manifest = {"format": FORMAT, "version": FORMAT_VERSION, "settings": asdict(settings),
                "documents": {doc_id: doc.to_json() for doc_id, doc in documents.items()}}
    with atomic_file(folder / MANIFEST) as tmp:
        tmp.write_text(json.dumps(manifest))
    return manifest


@contextmanager
def writing(folder: Path, hold: bool = True) -> Iterator[None]:
    """Hold the store's writer lock (an exclusive `flock` on `shards/.lock`, released by the system if the
    process dies) for the block: a second writer gets a clear error instead of clobbering shards. `hold=False`
    is the other processes of one launch, which write under their main process's lock."""
    if not hold:
        yield
        return
    (folder / SHARDS).mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ModuleNotFoundError:  # no flock (Windows): one writer at a time is the caller's to keep
        yield
        return
    with open(folder / SHARDS / ".lock", "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ValueError(f"another rcc process is writing {folder}: a store takes one writer at a time; wait "
                             "for it to finish, then run this again") from None
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def is_store(path: str | Path) -> bool:
    """A folder a store was (or is being) written into."""
    return (Path(path) / MANIFEST).is_file() or (Path(path) / SHARDS).is_dir()


class MemoryStore(Mapping[str, CompressedMemory]):
    """A read-only mapping of document id to `CompressedMemory` over a store folder (`rcc compress DIR|GLOB|
    FILE.jsonl -o STORE`).

    Example:
        .. code-block:: python

            from rcc_model import MemoryStore, RCCModel

            store = MemoryStore("corpus.rccstore")
            print(len(store), "documents;", "faq.md" in store)
            model = RCCModel.from_pretrained("default")
            print(model.ask(store["faq.md"], "How do I reset my password?"))

    Loading a document maps only its shard and checks its rows against the manifest's checksum
    (`MemoryFileError` when they differ).
    """

    def __init__(self, path: str | Path, device: str | torch.device = "cpu"):
        self.path = Path(path)
        self.device = device
        self._open: OrderedDict[str, Any] = OrderedDict()
        self._texts: dict[str, dict[str, dict[str, Any]]] = {}
        self._lock = threading.Lock()
        self._read_manifest()

    def _read_manifest(self) -> None:
        manifest_path = self.path / MANIFEST
        if not manifest_path.is_file():
            hint = (" (its shards are there: a `rcc compress` into it was stopped; run it again to finish)"
                    if (self.path / SHARDS).is_dir() else "")
            raise MemoryFileError(f"{self.path} is not a memory store: it has no {MANIFEST}{hint}")
        try:
            manifest = json.loads(manifest_path.read_text())
            if manifest.get("format") != FORMAT or int(manifest.get("version", 0)) > FORMAT_VERSION:
                raise MemoryFileError(f"{manifest_path} is not a store manifest this rcc reads")
            self.settings = StoreSettings(**manifest["settings"])
            self._documents = {k: StoredDocument.from_json(v) for k, v in manifest["documents"].items()}
        except MemoryFileError:
            raise
        except (json.JSONDecodeError, UnicodeDecodeError, TypeError, KeyError, ValueError, AttributeError) as e:
            raise MemoryFileError(f"{manifest_path} is damaged: {e}") from e

    def __len__(self) -> int:
        return len(self._documents)

    def __iter__(self) -> Iterator[str]:
        return iter(self._documents)

    def __contains__(self, doc_id: object) -> bool:
        return doc_id in self._documents

    def __repr__(self) -> str:
        return (f"MemoryStore({str(self.path)!r}, documents={len(self)}, rate={self.settings.rate}, "
                f"storage={self.settings.storage}, model={self.settings.fingerprint})")

    def entry(self, doc_id: str) -> StoredDocument:
        try:
            return self._documents[doc_id]
        except KeyError:
            raise KeyError(f"{doc_id!r} is not in the store {self.path}") from None

    def __getitem__(self, doc_id: str) -> CompressedMemory:
        doc, s = self.entry(doc_id), self.settings
        a, b = doc.rows
        with self._lock:
            shard = self._shard(doc.shard)
            try:
                parts = [shard.get_slice("states")[a:b]]
                if s.storage == "int8":
                    parts.append(shard.get_slice("scales")[a:b])
            except (SafetensorError, RuntimeError, ValueError) as e:
                raise MemoryFileError(f"{self.path / SHARDS / doc.shard}: rows of {doc_id!r} unreadable: {e}") from e
        if _digest(*parts) != doc.sha256:
            raise MemoryFileError(f"{self.path / SHARDS / doc.shard}: the rows of {doc_id!r} do not match their "
                                  "checksum (the shard is damaged); compress the document again")
        states = parts[0].float() * parts[1] if s.storage == "int8" else parts[0]
        return CompressedMemory(
            states=states.to(device=self.device, dtype=getattr(torch, s.dtype)), fingerprint=s.fingerprint,
            base=s.base, rate=s.rate, window=s.window, padding=s.padding, window_tokens=list(doc.window_tokens),
            token_count=doc.token_count, source_hash=doc.source_hash,
            window_texts=self._text_of(doc_id)["window_texts"])

    def text(self, doc_id: str) -> str:
        """The text a document was compressed from (kept in its shard's header)."""
        return self._text_of(doc_id)["text"]

    def _text_of(self, doc_id: str) -> dict[str, Any]:
        doc = self.entry(doc_id)
        with self._lock:
            if doc.shard not in self._texts:
                _, rows = read_shard_header(self.path / SHARDS / doc.shard)
                self._texts = {doc.shard: {d.id: texts for d, texts in rows}}  # one shard's texts at a time
            return self._texts[doc.shard][doc_id]

    def metadata(self, doc_id: str) -> dict[str, Any]:
        return dict(self.entry(doc_id).metadata)

    def append(self, documents: Sequence[tuple[str, str, dict[str, Any], CompressedMemory]]) -> None:
        """Add (id, text, metadata, memory) documents as one new shard, then rewrite the manifest; an id the
        store holds already is superseded. The memories must come from the store's model, rate and window."""
        if not documents:
            return
        s = self.settings
        for doc_id, _, _, memory in documents:
            if (memory.fingerprint, memory.rate, memory.window, memory.padding) != (s.fingerprint, s.rate, s.window,
                                                                                   s.padding):
                raise MemoryMismatchError(f"memory of {doc_id!r} was made by model {memory.fingerprint} at rate "
                                          f"{memory.rate}; {self.path} holds model {s.fingerprint}'s at rate {s.rate}")
        writer = ShardWriter(s, sum(memory.num_slots for *_, memory in documents))
        for doc_id, text, metadata, memory in documents:
            writer.add(doc_id, text, metadata, memory)
        with self._lock, writing(self.path):
            writer.write(self.path / SHARDS / shard_name(scan_shards(self.path)[2]))
            write_manifest(self.path)
            self._read_manifest()

    def summary(self) -> dict[str, Any]:
        """Sizes and settings, for `rcc info STORE`."""
        shards = {doc.shard for doc in self._documents.values()}
        stored = sum((self.path / SHARDS / name).stat().st_size for name in shards
                     if (self.path / SHARDS / name).is_file())
        tokens = sum(doc.token_count for doc in self._documents.values())
        return {"store": str(self.path), "documents": len(self), "shards": len(shards), "tokens": tokens,
                "slots": sum(doc.slots for doc in self._documents.values()), "store_bytes": stored,
                "bytes_per_token": round(stored / tokens, 1) if tokens else None, **asdict(self.settings)}

    def _shard(self, name: str):
        """The mapped shard file `name` (the few used last stay open)."""
        if name in self._open:
            self._open.move_to_end(name)
            return self._open[name]
        path = self.path / SHARDS / name
        try:
            handle = safe_open(str(path), framework="pt", device="cpu")
        except (SafetensorError, OSError) as e:
            raise MemoryFileError(f"{path} is missing or not a readable shard: {e}") from e
        self._open[name] = handle
        if len(self._open) > _OPEN_SHARDS:
            self._open.popitem(last=False)
        return handle

