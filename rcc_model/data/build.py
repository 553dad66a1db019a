"""`rcc data build`: tokenised training and held-out sets, cached as memory-mapped token files.

Layout of the output folder:
    train.tokens, heldout.tokens   uint32 token streams (documents joined by the EOS token)
    qa-train.jsonl, qa-heldout.jsonl   generated question-answer examples (`rcc_model.data.qa`)
    heldout-docs.jsonl             the held-out documents as text (needles, reconstruction evaluation)
    manifest.json                  sources, split rule, counts, tokenizer, seed
The held-out split is whole runs of documents chosen by a stable hash, so no training window overlaps it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from rcc_model.atomic import atomic_file
from rcc_model.data import qa
from rcc_model.data.sources import Document, python_docs, wordnet

RUN_LENGTH = 40  # documents per unit of the train / held-out split


@dataclass(frozen=True)
class Split:
    train: list[Document]
    heldout: list[Document]


def _heldout(key: str, share: float) -> bool:
    return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF < share


def split_documents(docs: list[Document], share: float) -> Split:
    train, heldout = [], []
    for start in range(0, len(docs), RUN_LENGTH):
        run = docs[start:start + RUN_LENGTH]
        (heldout if _heldout(f"{run[0].source}/{run[0].title}", share) else train).extend(run)
    return Split(train, heldout)


def _paragraph_texts(docs: list[Document], min_chars: int = 600, max_chars: int = 4000) -> list[str]:
    """Spans of whole paragraphs, used as QA contexts."""
    texts = []
    for doc in docs:
        current = ""
        for paragraph in doc.text.split("\n\n"):
            current = f"{current}\n\n{paragraph}" if current else paragraph
            if len(current) >= min_chars:
                texts.append(current[:max_chars])
                current = ""
    return texts


def _write_tokens(path: Path, tokenizer, docs: list[Document], batch: int = 256) -> int:
    eos = tokenizer.eos_token_id
    ids: list[int] = []
    for start in range(0, len(docs), batch):
        texts = [f"{d.title}\n\n{d.text}" for d in docs[start:start + batch]]
        for row in tokenizer(texts, add_special_tokens=False)["input_ids"]:
            ids.extend(row)
            ids.append(eos)
    array = np.asarray(ids, dtype=np.uint32)
    with atomic_file(path) as tmp:
        array.tofile(tmp)
    return len(array)


def _write_jsonl(path: Path, rows) -> None:
    with atomic_file(path) as tmp, tmp.open("w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def build(out: Path, tokenizer, *, work: Path | None = None, heldout_share: float = 0.05, seed: int = 0,
          qa_train: int = 20000, qa_heldout: int = 300, qa_wording: qa.Wording = qa.SHIPPED_WORDING) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    work = work or out / "sources"
    split = split_documents(list(python_docs(work)), heldout_share)
    synsets = list(wordnet(work))
    train_synsets = [s for s in synsets if not _heldout(s.word, heldout_share)]
    heldout_synsets = [s for s in synsets if _heldout(s.word, heldout_share)]
    counts = {
        "train_tokens": _write_tokens(out / "train.tokens", tokenizer, split.train),
        "heldout_tokens": _write_tokens(out / "heldout.tokens", tokenizer, split.heldout),
        "train_documents": len(split.train), "heldout_documents": len(split.heldout),
    }
    _write_jsonl(out / "heldout-docs.jsonl", ({"title": d.title, "text": d.text} for d in split.heldout))
    _write_jsonl(out / "qa-train.jsonl",
                 (e.to_dict() for e in qa.generate(_paragraph_texts(split.train), train_synsets, qa_train, seed,
                                                   qa_wording)))
    _write_jsonl(out / "qa-heldout.jsonl", (e.to_dict() for e in qa.generate(
        _paragraph_texts(split.heldout), heldout_synsets, qa_heldout, seed + 1, qa_wording)))
    manifest = {"sources": ["debian:python3.11-doc", "debian:wordnet-base"], "heldout_share": heldout_share,
                "split_unit_documents": RUN_LENGTH, "seed": seed, "qa_train": qa_train, "qa_heldout": qa_heldout,
                **{f"qa_{name}": value for name, value in asdict(qa_wording).items()},
                "tokenizer_vocab": len(tokenizer), "eos_token_id": tokenizer.eos_token_id, **counts}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def load_tokens(folder: Path, split: str) -> np.ndarray:
    """The memory-mapped token stream of a split."""
    path = folder / f"{split}.tokens"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run `rcc data build --out {folder}` first")
    return np.memmap(path, dtype=np.uint32, mode="r")


def load_qa(folder: Path, split: str) -> list[qa.QAExample]:
    path = folder / f"qa-{split}.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run `rcc data build --out {folder}` first")
    return [qa.QAExample(**json.loads(line)) for line in path.read_text().splitlines()]
