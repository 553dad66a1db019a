"""`MemoryCache`: memories compressed on first read, kept in a folder of bounded size, least recently used first out.

Why: an index that persists text instead of memory (`RCCMemoryIndex(storage="text")`) compresses a document
when a question first reads it. Where compression is cheap (a GPU) that beats storing kilobytes per token, and
the cache keeps what is read often. Entries are memory files (`CompressedMemory.save`, written atomically) named
by a key (`MemoryCache.key`: model, rate, text) and the storage dtype; reading one sets its modification time,
which orders eviction.

Threads of one process share a cache safely (one lock: a key is compressed once while the others wait);
processes sharing a folder see only whole files, and an entry evicted or damaged under a reader is a miss,
compressed again.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from rcc_model.memory import STORAGE_DTYPES, CompressedMemory, MemoryFileError

SUFFIX = ".rccmem"
FOLDER_VARIABLE = "RCC_MEMORY_CACHE"  # where a cache given no folder lives, if set
logger = logging.getLogger(__name__)


class MemoryCache:
    """A folder of memory files of at most `max_bytes` (default 2 GiB), stored as `dtype` (default int8, half of
    bfloat16), in `folder` (default `$RCC_MEMORY_CACHE` where set, else `~/.cache/rcc/memories`, under
    `$XDG_CACHE_HOME` where set).

    Example:
        .. code-block:: python

            cache = MemoryCache("memories/", max_bytes=10**9)
            key = MemoryCache.key(model.fingerprint, 4, text)
            memory = cache.fetch(key, lambda: model.compress(text))   # compressed once, then read from disk
    """

    DEFAULT_BYTES = 2 * 1024**3

    def __init__(self, folder: str | Path | None = None, max_bytes: int = DEFAULT_BYTES, dtype: str | None = "int8"):
        if type(max_bytes) is not int or max_bytes < 1:
            raise ValueError(f"`max_bytes` must be a positive integer, got {max_bytes!r}")
        if dtype is not None and dtype not in STORAGE_DTYPES:
            raise ValueError(f"`dtype` must be one of {STORAGE_DTYPES} or None (the memory's own), got {dtype!r}")
        if folder is None and os.environ.get(FOLDER_VARIABLE):
            folder = os.environ[FOLDER_VARIABLE]
        elif folder is None:
            from rcc_model.bases import default_cache_dir

            folder = default_cache_dir() / "memories"
        self.folder = Path(folder).expanduser()
        self.max_bytes = max_bytes
        self.dtype = dtype
        self.hits = 0
        self.misses = 0
        self._lock = threading.Lock()
        self._clock = 0  # the last modification time set, in ns: reads within one clock tick stay ordered

    def __repr__(self) -> str:
        return f"MemoryCache({str(self.folder)!r}, max_bytes={self.max_bytes}, dtype={self.dtype!r})"

    @staticmethod
    def key(*parts: object) -> str:
        """The name of an entry: a sha256 of what determines the memory (model fingerprint, rate, text)."""
        return hashlib.sha256("\0".join(map(str, parts)).encode("utf-8")).hexdigest()

    @property
    def nbytes(self) -> int:
        """Bytes the entries hold on disk now."""
        return sum(size for _, size, _ in self._entries())

    def fetch(self, key: str, make: Callable[[], CompressedMemory], device: str | torch.device = "cpu"
              ) -> CompressedMemory:
        """The memory cached under `key`, else `make()`'s, cached (as `dtype`, evicting the least recently
        used entries beyond `max_bytes`) and returned as its file reads back: a first read answers exactly as
        the later ones. A memory larger than `max_bytes`, or one the folder cannot take (read-only, full: a
        warning), is returned and not cached."""
        return self.fetch_many([key], lambda missing: [make()], device)[0]

    def fetch_many(self, keys: Sequence[str], make: Callable[[list[int]], list[CompressedMemory]],
                   device: str | torch.device = "cpu") -> list[CompressedMemory]:
        """`fetch` for several keys at once: `make(missing)` returns the memories of the keys at the indices
        `missing` (in that order), so that what is not cached is compressed in one batch, each key once (a key
        given twice, a window a document repeats, is made at its first index and shared)."""
        for key in keys:
            if not key or not all(c in "0123456789abcdef" for c in key):
                raise ValueError(f"a cache key is a lowercase hex digest (`MemoryCache.key`), got {key!r}")
        paths = [self.folder / f"{key}.{self.dtype or 'own'}{SUFFIX}" for key in keys]  # other dtypes may share it
        first = {path: i for i, path in reversed(list(enumerate(paths)))}  # each path's first index
        with self._lock:
            found = [self._read(path, device) if first[path] == i else None for i, path in enumerate(paths)]
            missing = [i for i, memory in enumerate(found) if memory is None and first[paths[i]] == i]
            self.hits += len(keys) - len(missing)
            self.misses += len(missing)
            made = make(missing) if missing else []
            if len(made) != len(missing):
                raise ValueError(f"`make` returned {len(made)} memories for {len(missing)} missing keys")
            for i, memory in zip(missing, made):
                found[i] = self._store(paths[i], memory.stored_as(self.dtype), device)
            return [found[first[path]] for path in paths]

    def _store(self, path: Path, memory: CompressedMemory, device: str | torch.device) -> CompressedMemory:
        """Write `memory` to `path` and evict beyond `max_bytes`; `memory` on `device`, cached or not."""
        try:
            memory.save(path, dtype=self.dtype)
        except OSError as error:  # read-only, full: answer uncached rather than not at all
            warnings.warn(f"the memory cache {self.folder} cannot be written ({error}): memories are compressed "
                          "on every read; give a writable cache folder with room", stacklevel=4)
            return memory.to(device)
        self._touch(path)
        self._evict()
        return memory.to(device)

    def _read(self, path: Path, device: str | torch.device) -> CompressedMemory | None:
        if not path.is_file():
            return None
        try:
            memory = CompressedMemory.load(path, device=device)
        except MemoryFileError as error:  # damaged, or evicted by another process while read: compress again
            logger.warning("cached memory %s is unreadable (%s); compressing it again", path, error)
            path.unlink(missing_ok=True)
            return None
        self._touch(path)
        return memory

    def _touch(self, path: Path) -> None:
        """Mark `path` most recently used."""
        self._clock = max(time.time_ns(), self._clock + 1000)
        with contextlib.suppress(FileNotFoundError):  # evicted by another process meanwhile
            os.utime(path, ns=(self._clock, self._clock))

    def _entries(self) -> list[tuple[int, int, Path]]:
        """(modification time, size, path) of each entry, least recently used first."""
        entries = []
        for path in self.folder.glob(f"*{SUFFIX}") if self.folder.is_dir() else ():
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            entries.append((stat.st_mtime_ns, stat.st_size, path))
        return sorted(entries)

    def _evict(self) -> None:
        """Remove the least recently used entries until the rest fit `max_bytes` (the newest last of all)."""
        entries = self._entries()
        total = sum(size for _, size, _ in entries)
        for _, size, path in entries:
            if total <= self.max_bytes:
                break
            path.unlink(missing_ok=True)
            total -= size
