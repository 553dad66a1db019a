"""Collating examples into the tensors `RCCModel.forward` takes.

Shapes: N_w windows of all examples (right-padded to the longest), B examples, T prompt + target tokens
(right-padded).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from rcc_model.training.objectives import Example
from rcc_model.windows import split_windows

IGNORE = -100


@dataclass
class Batch:
    window_ids: torch.Tensor      # (N_w, W)
    window_lengths: list[int]     # tokens per window
    window_owner: list[int]       # example index of each window, in order
    input_ids: torch.Tensor       # (B, T) prompt + target
    attention_mask: torch.Tensor  # (B, T)
    labels: torch.Tensor          # (B, T): target ids, IGNORE on prompt and padding
    window_rows: list[int] | None = None  # slot-cache row of each window, when every context is aligned

    @property
    def context_tokens(self) -> int:
        return sum(self.window_lengths)

    def to(self, device) -> Batch:
        return Batch(self.window_ids.to(device), self.window_lengths, self.window_owner,
                     self.input_ids.to(device), self.attention_mask.to(device), self.labels.to(device),
                     self.window_rows)


def collate(examples: Sequence[Example], window: int, padding: str) -> Batch:
    windows, owners, rows = [], [], []
    for index, example in enumerate(examples):
        for offset, w in enumerate(split_windows(example.context, window, padding)):
            windows.append(w)
            owners.append(index)
            if example.context_start is not None:
                rows.append(example.context_start // window + offset)
    lengths = [len(w) for w in windows]
    window_ids = torch.zeros(len(windows), max(lengths), dtype=torch.long)
    for row, w in enumerate(windows):
        window_ids[row, : len(w)] = torch.tensor(w)
    longest = max(len(e.prompt) + len(e.target) for e in examples)
    input_ids = torch.zeros(len(examples), longest, dtype=torch.long)
    mask = torch.zeros(len(examples), longest, dtype=torch.long)
    labels = torch.full((len(examples), longest), IGNORE, dtype=torch.long)
    for row, e in enumerate(examples):
        sequence = e.prompt + e.target
        input_ids[row, : len(sequence)] = torch.tensor(sequence)
        mask[row, : len(sequence)] = 1
        labels[row, len(e.prompt): len(sequence)] = torch.tensor(e.target)
    return Batch(window_ids, lengths, owners, input_ids, mask, labels, rows if len(rows) == len(windows) else None)
