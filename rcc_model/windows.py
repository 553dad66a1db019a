"""Cutting token sequences into encoder windows and choosing their slot positions.

Glossary: N tokens in a document, W window, r rate, n tokens in one window (n <= W), S slots.
"""

from __future__ import annotations

import math
from collections.abc import Container, Sequence


def split_windows(ids: Sequence[int], window: int, padding: str, cuts: Container[int] = ()) -> list[list[int]]:
    """Cut one document into the windows the encoder reads.

    "masked": consecutive windows of W tokens, the last one partial. With `cuts` (token ids that end a
    sentence) a window ends after the last of them in its second half instead, so that a sentence is not
    split between two windows that are encoded apart (a fact cut in two is half in each memory).
    "tile" (the release's semantics, without its two bugs): a document shorter than W is repeated to W
    tokens, ending on its own last token; a longer one gets a copy of its tail prepended until its length
    is a multiple of W (nothing when it already is), so its true end closes the last window.
    """
    ids = list(ids)
    if not ids:
        raise ValueError("cannot compress an empty input: it has no tokens")
    if padding == "tile":
        if len(ids) < window:
            ids = (ids * math.ceil(window / len(ids)))[-window:]
        else:
            pad = -len(ids) % window
            ids = ids[len(ids) - pad:] + ids if pad else ids
    elif padding != "masked":
        raise ValueError(f"`padding` must be 'masked' or 'tile', got {padding!r}")
    elif cuts:
        windows, start = [], 0
        while start < len(ids):
            end = min(start + window, len(ids))
            if end < len(ids):
                end = next((t + 1 for t in range(end - 1, start + window // 2 - 1, -1) if ids[t] in cuts), end)
            windows.append(ids[start:end])
            start = end
        return windows
    return [ids[start:start + window] for start in range(0, len(ids), window)]


def slot_positions(num_tokens: int, rate: int) -> list[int]:
    """0-based positions whose states become slots: the last token of every block of r tokens.

    A final partial block (only in "masked" windows) is closed by its own last token, so no text is lost.
    """
    positions = list(range(rate - 1, num_tokens, rate))
    if num_tokens % rate:
        positions.append(num_tokens - 1)
    return positions


def num_slots(num_tokens: int, rate: int) -> int:
    return math.ceil(num_tokens / rate)
