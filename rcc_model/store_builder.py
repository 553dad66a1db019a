"""Compressing a corpus into a memory store (`rcc_model.store`), in one process or many.

Under `accelerate launch` every process plans the same shards from the same corpus and store, takes its share
of them (balanced by token count) and writes them itself; the main process writes the manifest once all are
done. The shards are planned from the corpus alone, and each is compressed in the same batches whichever
process takes it, so N processes write the very store one process writes. Documents already in the store
with the same text are skipped: a killed run, started again, continues where it stopped.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm.auto import tqdm

from rcc_model import bases
from rcc_model.corpus import Corpus, CorpusError, Locator
from rcc_model.store import (
    SHARDS,
    ShardWriter,
    StoredDocument,
    StoreSettings,
    is_store,
    remove_stale_temporaries,
    scan_shards,
    shard_name,
    write_manifest,
    writing,
)
from rcc_model.windows import num_slots

if TYPE_CHECKING:
    from accelerate import PartialState

    from rcc_model.modeling import RCCModel

# Shards by default: 1/64 of the memory compressed in a run, between these sizes, so that up to 64 processes get
# balanced shares whatever their number (the plan must not depend on it) and huge corpora few files.
MIN_SHARD_MB, MAX_SHARD_MB, SHARDS_PER_RUN = 16, 512, 64
_GROUP_BATCHES = 4  # encoder batches compressed between two progress updates


@dataclass(frozen=True)
class PlannedDocument:
    id: str
    locator: Locator
    text_sha256: str
    tokens: int
    slots: int


@dataclass(frozen=True)
class ShardPlan:
    index: int
    documents: tuple[PlannedDocument, ...]

    @property
    def tokens(self) -> int:
        return sum(doc.tokens for doc in self.documents)

    @property
    def slots(self) -> int:
        return sum(doc.slots for doc in self.documents)


@dataclass(frozen=True)
class CompressionReport:
    """What one `compress_corpus` call did (this process's share for `compressed_*` and `seconds`)."""

    store: Path
    documents: int  # in the store now
    already_stored: int  # documents of the corpus skipped: the store holds them with the same text
    planned: int  # documents compressed by all processes together
    compressed_documents: int
    compressed_tokens: int
    seconds: float
    skipped: list[str]  # files or rows of the corpus that are not documents (not UTF-8, empty)

    @property
    def tokens_per_s(self) -> float:
        return self.compressed_tokens / self.seconds if self.seconds > 0 else 0.0


def settings_for(model: RCCModel, rate: int | None = None, storage: str | None = None) -> StoreSettings:
    cfg = model.config
    storage = storage or cfg.memory_dtype
    if storage not in ("float32", "bfloat16", "float16", "int8"):
        raise ValueError(f"storage must be float32, bfloat16, float16 or int8, got {storage!r}")
    return StoreSettings(fingerprint=model.fingerprint, base=cfg.base, rate=cfg.check_rate(rate),
                         window=cfg.window, padding=cfg.padding, storage=storage, dtype=cfg.memory_dtype,
                         entries=len(bases.decoder_layers(model.encoder)) + 1, hidden=bases.hidden_size(model.encoder))


def check_output(store: Path) -> None:
    """Refuse a store path that would overwrite something that is not a store (before a model loads)."""
    if store.exists() and not store.is_dir():
        raise ValueError(f"{store} is a file; a memory store is a folder: choose another -o")
    if store.is_dir() and any(store.iterdir()) and not is_store(store):
        raise ValueError(f"{store} is a folder that holds other files, not a memory store: choose another -o")


def default_shard_mb(run_bytes: int) -> float:
    """The shard size for a run that compresses `run_bytes` of memory: 1/64 of it, between 16 and 512 MB."""
    return min(MAX_SHARD_MB, max(MIN_SHARD_MB, run_bytes / SHARDS_PER_RUN / 2**20))


def plan_shards(documents: list[PlannedDocument], shard_bytes: int, bytes_per_slot: int, first: int
                ) -> list[ShardPlan]:
    """Consecutive documents packed into shards of at most `shard_bytes` (a larger document alone)."""
    shards: list[ShardPlan] = []
    current: list[PlannedDocument] = []
    for doc in documents:
        if current and (sum(d.slots for d in current) + doc.slots) * bytes_per_slot > shard_bytes:
            shards.append(ShardPlan(first + len(shards), tuple(current)))
            current = []
        current.append(doc)
    if current:
        shards.append(ShardPlan(first + len(shards), tuple(current)))
    return shards


def assign_shards(shards: list[ShardPlan], processes: int) -> list[list[ShardPlan]]:
    """Each process's shards: the largest first to the least loaded (by tokens), ties to the lowest index."""
    shares: list[list[ShardPlan]] = [[] for _ in range(processes)]
    loads = [0] * processes
    for shard in sorted(shards, key=lambda s: (-s.tokens, s.index)):
        p = min(range(processes), key=lambda i: (loads[i], i))
        shares[p].append(shard)
        loads[p] += shard.tokens
    return [sorted(share, key=lambda s: s.index) for share in shares]


def compress_corpus(model: RCCModel, corpus: Corpus, store: str | Path, *, rate: int | None = None,
                    storage: str | None = None, shard_mb: float | None = None, batch_size: int = 8,
                    progress: bool = True, state: PartialState | None = None) -> CompressionReport:
    """Compress every document of `corpus` the store does not already hold (same id and text) into new shards
    of at most `shard_mb` MB (default: 1/64 of what this run compresses, between 16 and 512 MB), then rewrite
    the manifest. `state` (accelerate's `PartialState`) splits the
    work across the processes of a launch; None is one process."""
    if batch_size < 1 or (shard_mb is not None and shard_mb <= 0):
        raise ValueError(f"batch_size must be >= 1 and shard_mb > 0, got {batch_size} and {shard_mb}")
    store = Path(store)
    check_output(store)
    settings = settings_for(model, rate, storage)
    index, count = (state.process_index, state.num_processes) if state is not None else (0, 1)
    barrier = state.wait_for_everyone if state is not None else (lambda: None)

    with writing(store, hold=index == 0):
        barrier()  # the main process holds the store's writer lock before any process reads the store
        existing, stored, first = scan_shards(store)
        if existing is not None:
            existing.check_same(settings, str(store))
        planned, in_corpus = _plan_documents(model, corpus, settings.rate, stored)
        needed = sum(doc.slots for doc in planned) * settings.bytes_per_slot
        _check_disk(store, needed)
        shard_bytes = int((shard_mb or default_shard_mb(needed)) * 2**20)
        shards = plan_shards(planned, shard_bytes, settings.bytes_per_slot, first)
        mine = assign_shards(shards, count)[index]
        if index == 0:
            remove_stale_temporaries(store)
        barrier()  # every process has scanned the store before any writes to it

        began, done_docs, done_tokens = time.perf_counter(), 0, 0
        desc = "compressing" if count == 1 else f"compressing [{index + 1}/{count}]"
        with tqdm(total=sum(s.tokens for s in mine), unit="tok", unit_scale=True, desc=desc, position=index,
                  disable=not progress) as bar:
            for shard in mine:
                _write_shard(model, corpus, shard, settings, batch_size, store, bar)
                done_docs += len(shard.documents)
                done_tokens += shard.tokens
        seconds = time.perf_counter() - began
        barrier()
        if index == 0 and (shards or stored):
            write_manifest(store)
        barrier()  # no process returns before the manifest is written
        return CompressionReport(store=store, documents=len(stored.keys() | {doc.id for doc in planned}),
                                 already_stored=in_corpus - len(planned), planned=len(planned),
                                 compressed_documents=done_docs, compressed_tokens=done_tokens, seconds=seconds,
                                 skipped=list(corpus.skipped))


def _plan_documents(model: RCCModel, corpus: Corpus, rate: int, stored: dict[str, StoredDocument]
                    ) -> tuple[list[PlannedDocument], int]:
    """(the corpus's documents the store does not hold with the same text, with their sizes; how many documents
    the corpus has). Duplicate ids are refused."""
    seen: dict[str, Locator | None] = {}
    planned = []
    for doc in corpus:
        if doc.id in seen:
            raise CorpusError(f"document id {doc.id!r} appears twice ({_where(seen[doc.id])} and "
                              f"{_where(doc.locator)}): ids must be unique")
        seen[doc.id] = doc.locator
        digest = doc.text_sha256
        if doc.id in stored and stored[doc.id].text_sha256 == digest:
            continue
        windows = model.window_ids(doc.text)  # the windows compress will cut
        planned.append(PlannedDocument(doc.id, doc.locator, digest, sum(len(w) for w in windows),
                                       sum(num_slots(len(w), rate) for w in windows)))
    return planned, len(seen)


def _check_disk(store: Path, needed: int) -> None:
    """Refuse, before compressing, a corpus whose memory would not fit on the store's disk."""
    folder = next(p for p in (store.absolute(), *store.absolute().parents) if p.exists())
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise ValueError(f"the corpus's memory needs {needed / 1e9:.1f} GB and {folder} has {free / 1e9:.1f} GB "
                         "free: write the store elsewhere, or store it smaller with --storage int8")


def _where(locator: Locator | None) -> str:
    if locator is None:
        return "?"
    return locator.path if locator.offset is None else f"{locator.path} at byte {locator.offset}"


def _write_shard(model: RCCModel, corpus: Corpus, shard: ShardPlan, settings: StoreSettings, batch_size: int,
                 store: Path, bar: tqdm) -> None:
    """Compress one planned shard, a few encoder batches at a time, and write it."""
    writer = ShardWriter(settings, shard.slots)
    group: list[PlannedDocument] = []
    windows = 0
    for position, planned in enumerate(shard.documents):
        group.append(planned)
        windows += -(-planned.tokens // settings.window)
        if windows >= _GROUP_BATCHES * batch_size or position == len(shard.documents) - 1:
            documents = [corpus.read(p.id, p.locator) for p in group]
            for p, doc in zip(group, documents):
                if doc.text_sha256 != p.text_sha256:
                    raise CorpusError(f"{_where(p.locator)} changed while it was being compressed: start again")
            memories = model.compress([doc.text for doc in documents], batch_size=batch_size, progress=False,
                                      rate=settings.rate)
            for doc, memory in zip(documents, memories):
                writer.add(doc.id, doc.text, doc.metadata, memory)
            bar.update(sum(p.tokens for p in group))
            group, windows = [], 0
    writer.write(store / SHARDS / shard_name(shard.index))

