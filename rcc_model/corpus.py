"""The documents of a corpus, for `rcc compress` into a memory store: a folder, a glob, or a JSONL file.

A corpus may not fit in memory, so it is read twice as a stream: once to plan (ids, text hashes, sizes), once
shard by shard to compress; a document is found again by its `Locator` (file, and line offset in a JSONL file).
"""

from __future__ import annotations

import glob
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class CorpusError(ValueError):
    """A corpus that cannot be read as documents: no files, a bad JSONL line, a duplicate id."""


@dataclass(frozen=True)
class Locator:
    """Where a document is: a whole file (`offset` None) or the JSONL line starting at byte `offset`."""

    path: str
    offset: int | None = None


@dataclass(frozen=True)
class Document:
    id: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)
    locator: Locator | None = field(default=None, compare=False)

    @property
    def text_sha256(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()


def is_corpus(source: str | Path) -> bool:
    """A folder, a glob pattern (`docs/**/*.md`) or a `.jsonl` file, rather than one text file or '-'."""
    source = str(source)
    path = Path(source)
    if path.is_dir() or path.suffix == ".jsonl":
        return True
    return not path.exists() and any(c in source for c in "*?[")


class Corpus:
    """The documents of `source`, in a stable order (sorted file paths; JSONL line order).

    Folder: every file under it but hidden ones, id = the path relative to the folder. Glob: the files it
    matches (`**` recursive), id = the path as matched. JSONL: one object per line with "id" and "text"; its
    "metadata" object and any other keys become the document's metadata. Files that are not UTF-8 text and
    empty documents are skipped and listed in `skipped` (a corpus folder often holds a stray binary file).
    """

    def __init__(self, source: str | Path):
        self.source = str(source)
        self.skipped: list[str] = []
        path = Path(self.source)
        if path.suffix == ".jsonl" and not path.is_dir():
            if not path.is_file():
                raise CorpusError(f"JSONL corpus {path} does not exist")
            self._jsonl: Path | None = path
            self._files: list[tuple[str, Path]] = []
            return
        self._jsonl = None
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file()
                           and not any(part.startswith(".") for part in p.relative_to(path).parts))
            self._files = [(p.relative_to(path).as_posix(), p) for p in files]
        else:
            self._files = [(p, Path(p)) for p in sorted(glob.glob(self.source, recursive=True)) if Path(p).is_file()]
        if not self._files:
            raise CorpusError(f"{self.source} names no files to compress")

    def __iter__(self) -> Iterator[Document]:
        self.skipped = []
        if self._jsonl is not None:
            yield from self._jsonl_documents()
            return
        for doc_id, path in self._files:
            document = self._file_document(doc_id, path)
            if document is not None:
                yield document

    def read(self, doc_id: str, locator: Locator) -> Document:
        """The document `doc_id` found again where the planning pass saw it."""
        if locator.offset is None:
            document = self._file_document(doc_id, Path(locator.path))
        else:
            with open(locator.path, "rb") as f:
                f.seek(locator.offset)
                document = self._jsonl_document(f.readline(), locator)
        if document is None or document.id != doc_id:
            raise CorpusError(f"{locator.path} changed while it was being compressed: {doc_id!r} is gone")
        return document

    def _file_document(self, doc_id: str, path: Path) -> Document | None:
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            self.skipped.append(f"{path}: not UTF-8 text")
            return None
        if not text.strip():
            self.skipped.append(f"{path}: empty")
            return None
        return Document(doc_id, text, {"file_path": str(path), "file_name": path.name}, Locator(str(path)))

    def _jsonl_documents(self) -> Iterator[Document]:
        offset = 0
        with open(self._jsonl, "rb") as f:
            for line in f:
                document = self._jsonl_document(line, Locator(str(self._jsonl), offset))
                offset += len(line)
                if document is not None:
                    yield document

    def _jsonl_document(self, line: bytes, locator: Locator) -> Document | None:
        where = f"{locator.path} at byte {locator.offset}"
        if not line.strip():
            return None
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CorpusError(f"{where}: not a JSON object: {e}") from e
        if not isinstance(row, dict) or not isinstance(row.get("text"), str) \
                or not isinstance(row.get("id"), (str, int)) or isinstance(row.get("id"), bool):
            raise CorpusError(f'{where}: each line must be an object with a string "text" and a string or '
                              f'integer "id", got keys {sorted(row) if isinstance(row, dict) else type(row).__name__}')
        metadata = row.pop("metadata", None) or {}
        if not isinstance(metadata, dict):
            raise CorpusError(f'{where}: "metadata" must be an object')
        doc_id, text = str(row.pop("id")), row.pop("text")
        if not text.strip():
            self.skipped.append(f"{doc_id}: empty")
            return None
        return Document(doc_id, text, {**row, **metadata}, locator)
