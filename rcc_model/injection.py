"""Forward hooks that add bridge outputs to the slot positions after each decoder layer.

The hooks are installed once and do nothing unless the calling thread (or asyncio task) has opened
`SlotInjector.inject(...)`: the additions live in a context variable, not on the shared modules, so a
prefill in one thread never leaks into a decoding step or a prefill running in another.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar

import torch
from torch import nn

_ACTIVE: ContextVar[tuple[int, Sequence[torch.Tensor | None]] | None] = ContextVar("rcc_slot_additions",
                                                                                   default=None)


class SlotInjector:
    """Adds `additions[i]` (B, P, H) to positions [0, P) of the output of decoder layer i, inside `inject`.

    Only a pass whose sequence starts with the P slot positions may run inside (the prefill, or a training
    forward and its backward); cached decoding steps run outside. Hooks return a new tensor instead of
    writing in place, so autograd works.
    """

    def __init__(self, layers: nn.ModuleList):
        self.num_layers = len(layers)
        self._handles = [layer.register_forward_hook(self._hook(i)) for i, layer in enumerate(layers)]

    @contextmanager
    def inject(self, additions: Sequence[torch.Tensor | None]) -> Iterator[None]:
        if len(additions) != self.num_layers:
            raise ValueError(f"{len(additions)} additions for {self.num_layers} decoder layers")
        token = _ACTIVE.set((id(self), additions))
        try:
            yield
        finally:
            _ACTIVE.reset(token)

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()

    def _hook(self, index: int):
        def hook(module: nn.Module, args, output):
            active = _ACTIVE.get()
            if active is None or active[0] != id(self) or active[1][index] is None:
                return None
            addition = active[1][index]
            hidden = output[0] if isinstance(output, tuple) else output  # (B, T, H), T >= P
            slots = addition.shape[1]
            if hidden.shape[1] < slots:
                raise RuntimeError("slot injection ran on a pass without the slot positions")
            delta = addition.to(device=hidden.device, dtype=hidden.dtype)
            hidden = torch.cat([hidden[:, :slots] + delta, hidden[:, slots:]], dim=1)
            return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

        return hook
