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


@pytest.fixture()
def prefers_text(text_rcc, monkeypatch) -> None:
    """`text_rcc` made to favour text over a JSON tool call: every token opening an object scores -1e4 after
    each prefill."""
    tokenizer = text_rcc.tokenizer
    texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
    openers = [i for i, text in enumerate(texts) if text.lstrip().startswith("{")]
    prefill = text_rcc.prefill_prompt

    def biased(*args, **kwargs):
        state = prefill(*args, **kwargs)
        state.logits[..., openers] = -1e4
        return state

    monkeypatch.setattr(text_rcc, "prefill_prompt", biased)
