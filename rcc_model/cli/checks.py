"""What the `rcc` commands check before they load a model: numbers in range (argparse `type=` functions, so a
bad flag is refused while parsing) and paths that can be read or written."""

from __future__ import annotations

import argparse
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def ranged(kind: type, low: float, above: bool = False, high: float | None = None) -> Callable[[str], Any]:
    """An argparse `type=` that reads a finite `kind` (int or float) of at least `low` (above it with `above`)
    and at most `high`, and says which bound a value breaks."""
    if high is not None:
        bounds = f"above {low:g} and at most {high:g}" if above else f"between {low:g} and {high:g}"
    else:
        bounds = f"above {low:g}" if above else ("0 or more" if low == 0 else f"at least {low:g}")

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            expected = "an integer" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
        if value < low or (above and value == low) or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be {bounds}, got {value:g}")
        return value

    return parse


positive_int = ranged(int, 1)
non_negative_int = ranged(int, 0)
positive_float = ranged(float, 0, above=True)
non_negative_float = ranged(float, 0)  # a temperature: 0 is greedy
share = ranged(float, 0, high=1)  # a depth, a share of documents
top_p = ranged(float, 0, above=True, high=1)  # nucleus sampling's probability mass


def readable_file(path: str | Path, what: str) -> Path:
    """`path`, a file that exists and can be opened for reading (a named pipe counts), else `ValueError`."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{what} {path} does not exist")
    if path.is_dir():
        raise ValueError(f"{path} is a folder; expected a {what}")
    if not os.access(path, os.R_OK):
        raise ValueError(f"{what} {path} cannot be read (permission denied)")
    return path


def writable_file(path: str | Path, what: str = "output file") -> Path:
    """`path`, where a file can be written: not a folder, in a folder that exists (or can be made) and
    takes new files. Checked by creating and removing a probe file, so a read-only mount is caught too."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{what} {path} is a folder: give a file path with -o")
    if path.exists() and not os.access(path, os.W_OK):
        raise ValueError(f"{what} {path} exists and cannot be overwritten (permission denied)")
    _check_folder(path.absolute().parent, what, path)
    return path


def writable_folder(path: str | Path, what: str = "output folder") -> Path:
    """`path`, a folder that exists (or can be made) and takes new files; a file there is refused."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{what} {path} is a file, not a folder: choose another path")
    _check_folder(path.absolute(), what, path)
    return path


def _check_folder(folder: Path, what: str, path: Path) -> None:
    """Refuse `path` unless its nearest existing folder among `folder` and its parents takes new files."""
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not existing.is_dir():
        raise ValueError(f"cannot write {what} {path}: {existing} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as e:
        raise ValueError(f"cannot write {what} {path}: {existing} does not take new files "
                         f"({e.strerror or e}); choose another path") from e
