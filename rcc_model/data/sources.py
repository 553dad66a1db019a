"""Training text from registry packages: Debian's Python documentation and WordNet, fetched with apt.

Nothing here is committed: `rcc data build` downloads the packages, extracts them under the data folder and
reads them. Each reader yields plain-text documents in a fixed order, so a build is deterministic.
"""

from __future__ import annotations

import gzip
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from rcc_model.atomic import fresh_folder

DEBIAN_PACKAGES = {"python-docs": "python3.11-doc", "wordnet": "wordnet-base"}


@dataclass(frozen=True)
class Document:
    source: str
    title: str
    text: str


@dataclass(frozen=True)
class Synset:
    word: str
    pos: str
    gloss: str
    examples: tuple[str, ...]


def fetch_debian(package: str, root: Path) -> Path:
    """Download and unpack a Debian package (no root install needed); returns the unpacked tree."""
    target = root / "debian" / package
    if target.is_dir():
        return target
    if shutil.which("apt-get") is None:
        raise RuntimeError(f"apt-get is needed to fetch the Debian package {package!r}")
    downloads = root / "debian" / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["apt-get", "download", package], cwd=downloads, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"apt-get download {package} failed (run 'apt-get update' first?): {done.stderr}")
    deb = max(downloads.glob(f"{package}_*.deb"), key=lambda p: p.stat().st_mtime)
    with fresh_folder(target) as tmp:
        subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp)], check=True)
    return target


_NODE = re.compile(r"^\x1f?\nFile: [^,]+,  Node: ([^,\n]+)", re.MULTILINE)
_NOTE = re.compile(r"\*[Nn]ote ([^:]+?)(?:\s*::|:\s*[^.,;)\s]+[.,;)]?)")
_UNDERLINE = re.compile(r"^\s*([*=.\-~])\1{2,}\s*$", re.MULTILINE)


def python_docs(root: Path) -> Iterator[Document]:
    """The Python 3.11 manual from its Info file, one document per node, markup removed."""
    tree = fetch_debian(DEBIAN_PACKAGES["python-docs"], root)
    raw = gzip.decompress((tree / "usr/share/info/python3.11.info.gz").read_bytes()).decode("utf-8")
    return info_documents(raw, "python-docs")


def info_documents(raw: str, source: str) -> Iterator[Document]:
    """Split a GNU Info file into one document per node, without cross-reference markup or footnotes."""
    starts = [(m.start(), m.group(1)) for m in _NODE.finditer(raw)]
    for (start, title), (end, _) in zip(starts, [*starts[1:], (len(raw), "")]):
        body = raw[start:end].split("\n", 3)[-1]
        body = body.split("   ---------- Footnotes ----------")[0]
        body = _UNDERLINE.sub("", _NOTE.sub(r"\1", body)).replace("\x1f", "")
        body = re.sub(r"\n{3,}", "\n\n", body).strip()
        if len(body) > 200:
            yield Document(source, title.strip(), body)


def wordnet(root: Path) -> Iterator[Synset]:
    """WordNet 3.0 synsets with a gloss: (first lemma, part of speech, definition, examples)."""
    tree = fetch_debian(DEBIAN_PACKAGES["wordnet"], root)
    for pos in ("noun", "verb", "adj", "adv"):
        for line in (tree / f"usr/share/wordnet/data.{pos}").read_text(encoding="latin-1").splitlines():
            if line.startswith(" ") or " | " not in line:
                continue
            fields, gloss = line.split(" | ", 1)
            word = fields.split()[4].replace("_", " ")
            word = re.sub(r"\(\w+\)$", "", word)
            parts = [p.strip() for p in gloss.split(";")]
            definition = "; ".join(p for p in parts if not p.startswith('"'))
            examples = tuple(p.strip('" ') for p in parts if p.startswith('"'))
            if definition:
                yield Synset(word, pos, definition, examples)
