"""Fixtures the integration tests share."""

from __future__ import annotations

import pytest


@pytest.fixture()
def prompts_read(text_rcc, monkeypatch) -> list[tuple[int, list[dict[str, str]]]]:
    """(memory slots, chat) of every answer `text_rcc` streams, as the decoder receives them."""
    seen: list[tuple[int, list[dict[str, str]]]] = []
    stream = text_rcc.stream

    def spy(memory, prompt, **kwargs):
        seen.append((memory.num_slots, prompt))
        return stream(memory, prompt, **kwargs)

    monkeypatch.setattr(text_rcc, "stream", spy)
    return seen
