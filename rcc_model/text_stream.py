"""Turning generated tokens into text pieces as they arrive."""

from __future__ import annotations

from collections.abc import Sequence


class TextStream:
    """Turns one row's tokens into text pieces that are safe to show: no half-decoded characters, and
    nothing that could still turn out to be the start of a stop string."""

    def __init__(self, tokenizer, stop: Sequence[str] = (), skip_special_tokens: bool = True):
        self.tokenizer = tokenizer
        self.stop = [s for s in stop if s]
        self.skip_special_tokens = skip_special_tokens
        self.ids: list[int] = []
        self.emitted = 0
        self.stopped = False
        self.text = ""

    def push(self, token: int) -> str:
        self.ids.append(token)
        self.text = self.tokenizer.decode(self.ids, skip_special_tokens=self.skip_special_tokens)
        for stop in self.stop:
            cut = self.text.find(stop, max(0, self.emitted - len(stop)))
            if cut != -1:
                self.stopped, self.text = True, self.text[:cut]
                return self._take(len(self.text))
        if self.text.endswith("\ufffd"):
            return ""
        hold = max((len(s) - 1 for s in self.stop), default=0)
        return self._take(len(self.text) - hold)

    def finish(self) -> str:
        return self._take(len(self.text))

    def _take(self, end: int) -> str:
        if end <= self.emitted:
            return ""
        piece, self.emitted = self.text[self.emitted:end], end
        return piece
