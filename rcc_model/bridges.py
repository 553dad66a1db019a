"""The L+1 bias-free linear maps that carry encoder states into the decoder."""

from __future__ import annotations

import torch
from torch import nn


class Bridges(nn.Module):
    """`embed` maps encoder entry 0 to the decoder's input embeddings; `layers[i]` maps the (mean of the)
    encoder entries named by `layer_map[i]` to an addition after decoder layer i.

    Layout: slot states are (B, S, K, H_enc) with K = encoder hidden-state entries (L_enc + 1).
    """

    def __init__(self, encoder_hidden: int, decoder_hidden: int, layer_map: list[list[int]], init: str):
        super().__init__()
        self.layer_map = layer_map
        self.embed = nn.Linear(encoder_hidden, decoder_hidden, bias=False)
        self.layers = nn.ModuleList(nn.Linear(encoder_hidden, decoder_hidden, bias=False) for _ in layer_map)
        self.reset_parameters(init)

    @torch.no_grad()
    def reset_parameters(self, init: str) -> None:
        if init == "identity":
            if self.embed.in_features != self.embed.out_features:
                raise ValueError("bridge_init='identity' needs encoder and decoder of the same hidden size")
            nn.init.eye_(self.embed.weight)
            for layer in self.layers:
                nn.init.zeros_(layer.weight)
        else:
            for linear in (self.embed, *self.layers):
                nn.init.normal_(linear.weight, std=0.02)

    def embeddings(self, states: torch.Tensor) -> torch.Tensor:
        """(B, S, K, H_enc) -> (B, S, H_dec): the slot embeddings that replace the slot tokens'."""
        return self.embed(states[:, :, 0])

    def layer_additions(self, states: torch.Tensor) -> list[torch.Tensor | None]:
        """(B, S, K, H_enc) -> per decoder layer, (B, S, H_dec) to add after it, or None."""
        additions: list[torch.Tensor | None] = []
        for bridge, entries in zip(self.layers, self.layer_map):
            if not entries:
                additions.append(None)
                continue
            source = states[:, :, entries[0]] if len(entries) == 1 else states[:, :, entries].mean(dim=2)
            additions.append(bridge(source))
        return additions
