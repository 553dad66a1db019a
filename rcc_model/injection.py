"""Scoped forward hooks that add bridge outputs to the slot positions after each decoder layer."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn


@contextmanager
def inject_slots(layers: nn.ModuleList, additions: Sequence[torch.Tensor | None]) -> Iterator[None]:
    """While open, the output of `layers[i]` gets `additions[i]` (B, P, H) added at positions [0, P).

    Only a pass whose sequence starts with the P slot positions may run inside (the prefill, or a
    training forward); cached decoding steps run outside. Hooks return a new tensor instead of writing in
    place, so autograd works, and they are removed even when the forward raises.
    """
    if len(additions) != len(layers):
        raise ValueError(f"{len(additions)} additions for {len(layers)} decoder layers")
    handles = [
        layer.register_forward_hook(_adder(addition))
        for layer, addition in zip(layers, additions)
        if addition is not None
    ]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _adder(addition: torch.Tensor):
    slots = addition.shape[1]

    def hook(module: nn.Module, args, output):
        hidden = output[0] if isinstance(output, tuple) else output  # (B, T, H), T >= P
        if hidden.shape[1] < slots:
            raise RuntimeError("slot injection ran on a pass without the slot positions")
        delta = addition.to(device=hidden.device, dtype=hidden.dtype)
        hidden = torch.cat([hidden[:, :slots] + delta, hidden[:, slots:]], dim=1)
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

    return hook
