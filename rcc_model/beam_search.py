"""Beam search for text of known length: reconstruction, where the memory records each window's token count.

Greedy decoding commits to the likeliest next token; one wrong token early in a window sends the rest of the
window off course. Beam search keeps the `num_beams` likeliest partial windows instead. Every hypothesis has the
same length, so scores are plain sums of log-probabilities (no length penalty) and EOS is ruled out, as greedy
reconstruction rules it out (`min_new_tokens`).

Shapes: B memories, k beams, V vocabulary; cache rows are memory-major (row b * k + j is beam j of memory b).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers.generation.logits_process import NoRepeatNGramLogitsProcessor

from rcc_model.generation import advance, eos_token_ids, prefill
from rcc_model.memory import CompressedMemory


@dataclass
class BeamResult:
    """Per memory, the best hypothesis's tokens and its total log-probability (nats)."""

    ids: list[list[int]]
    scores: list[float]


@torch.no_grad()
def beam_search(model, memories: Sequence[CompressedMemory], length: int, num_beams: int,
                no_repeat_ngram_size: int = 0) -> BeamResult:
    """Exactly `length` tokens from each memory (no prompt): the likeliest sequence `num_beams` hypotheses per
    memory find; `no_repeat_ngram_size` n > 0 forbids a hypothesis to repeat an n-gram of its own."""
    if num_beams < 1:
        raise ValueError(f"`num_beams` must be at least 1, got {num_beams}")
    if length < 1:
        raise ValueError(f"`length` must be at least 1, got {length}")
    rows, k = len(memories), num_beams
    state = prefill(model, [m for m in memories for _ in range(k)], [[]] * (rows * k), length)
    device = state.logits.device
    eos = torch.tensor(sorted(eos_token_ids(model)), dtype=torch.long, device=device)
    blocker = NoRepeatNGramLogitsProcessor(no_repeat_ngram_size) if no_repeat_ngram_size else None
    scores = torch.full((rows, k), float("-inf"), device=device)
    scores[:, 0] = 0.0  # the k copies of a memory start identical: extend one, or every beam would be the same
    history = torch.zeros(rows * k, 0, dtype=torch.long, device=device)  # (B k, t)
    first_row = torch.arange(rows, device=device)[:, None] * k  # (B, 1)
    for step in range(length):
        log_probs = torch.log_softmax(state.logits, dim=-1).index_fill(1, eos, float("-inf"))  # (B k, V)
        if blocker is not None:
            log_probs = blocker(history, log_probs)
        vocab = log_probs.shape[-1]
        candidates = (scores[..., None] + log_probs.view(rows, k, vocab)).view(rows, k * vocab)
        scores, chosen = candidates.topk(k, dim=-1)  # (B, k)
        parents = (first_row + chosen // vocab).view(-1)  # (B k,): the cache row each new hypothesis extends
        history = torch.cat([history[parents], (chosen % vocab).view(-1, 1)], dim=1)
        if step + 1 < length:
            state.cache.reorder_cache(parents)
            state = advance(model, dataclasses.replace(state, mask=state.mask[parents],
                                                       positions=state.positions[parents]), history[:, -1])
    best = scores.argmax(dim=-1)  # (B,)
    winners = (first_row.squeeze(1) + best).tolist()
    return BeamResult([history[row].tolist() for row in winners], scores.gather(1, best[:, None]).squeeze(1).tolist())
