"""Beam search for text of known length: reconstruction, where the memory records each window's token count.

Greedy decoding commits to the likeliest next token; one wrong token early in a window sends the rest of the
window off course. Beam search keeps the `num_beams` likeliest partial windows instead. Every hypothesis has the
same length, so scores are plain sums of log-probabilities (no length penalty) and EOS is ruled out, as greedy
reconstruction rules it out (`min_new_tokens`).

The memory can also check a hypothesis (`verify`): the encoder is causal, so slot j is a function of the
window's tokens up to the end of block j alone. Each time a hypothesis completes a block, the encoder reads the
block after the hypothesis's own earlier blocks (its KV cache), and the hypothesis pays `verify` nats per unit of
distance between that state and the memory's slot. The right block lands within bfloat16 noise of the slot;
one changed token puts it an order of magnitude or more further away, most of all where it is the block's last.
And a slot's first entry is the embedding of its block's last token, so that token can be read back exactly and
written there (`anchored`).

Shapes: B memories, k beams, V vocabulary; cache rows are memory-major (row b * k + j is beam j of memory b).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from types import MappingProxyType

import torch
from transformers.generation.logits_process import NoRepeatNGramLogitsProcessor

from rcc_model.decoding import advance, eos_token_ids, prefill, with_static_cache
from rcc_model.memory import CompressedMemory
from rcc_model.windows import slot_positions


@dataclass(frozen=True)
class Search:
    """How reconstruction decodes each window: greedy (the defaults), or by beam search with `num_beams`
    hypotheses, optionally checked against the memory (`verify`, `anchored`); `beam_search` checks the values."""

    num_beams: int = 1
    verify: float = 0.0
    anchored: bool = False

    @property
    def greedy(self) -> bool:
        return self.num_beams == 1 and not self.verify and not self.anchored

    @classmethod
    def of(cls, config, num_beams: int | None = None, verify: float | None = None,
           anchored: bool | None = None) -> Search:
        """A model's own settings (`RCCConfig.reconstruct_*`), each replaced where given."""
        return cls(config.reconstruct_beams if num_beams is None else num_beams,
                   config.reconstruct_verify if verify is None else verify,
                   config.reconstruct_anchored if anchored is None else anchored)


GREEDY = MappingProxyType({"num_beams": 1, "verify": 0.0, "anchored": False})
"""`RCCModel.reconstruct`'s settings for plain greedy decoding, whatever the model's own."""
ANCHORED_GREEDY = MappingProxyType({**GREEDY, "anchored": True})
"""Greedy decoding that writes the token each slot holds: one token in r is right, so a window the decoder
goes astray in comes back to its text at the next slot."""


@dataclass
class BeamResult:
    """Per memory, the best hypothesis's tokens and its score: total log-probability (nats), less what `verify`
    charged it."""

    ids: list[list[int]]
    scores: list[float]


def state_distance(states: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
    """(N, K, H) re-encoded states vs (N, K, H) memory slots -> (N,): the relative L2 distance of each of the K
    entries (embedding and every layer, whose scales differ by orders of magnitude), averaged."""
    states, slots = states.float(), slots.float()
    return ((states - slots).norm(dim=-1) / slots.norm(dim=-1).clamp(min=1e-6)).mean(-1)


def anchor_tokens(model, memory: CompressedMemory) -> list[int]:
    """The token at each slot position of a one-window memory, read from the slot's first entry: the encoder's
    input embedding of the block's last token (no layer has run on it yet), matched to the nearest row of the
    embedding matrix by cosine (bases that scale their embeddings, as Gemma does, keep the direction). One token
    in r is thus known exactly before any decoding."""
    table = torch.nn.functional.normalize(model.encoder.get_input_embeddings().weight.float(), dim=-1)  # (V, H)
    entries = torch.nn.functional.normalize(memory.states[:, 0].to(table.device, torch.float32), dim=-1)  # (S, H)
    return (entries @ table.T).argmax(dim=-1).tolist()


def encode_block(model, block: torch.Tensor, cache=None) -> tuple[torch.Tensor, object]:
    """The encoder on (N, T) tokens after `cache` (the rows' earlier blocks; None at a window's start): the state
    of each row's last token, (N, K, H), as a slot holds it, and the grown cache."""
    out = model.encoder.base_model(input_ids=block, cache=cache, use_cache=True, output_hidden_states=True)
    return torch.stack([h[:, -1] for h in out.hidden_states], dim=1), out.cache


class _BlockChecker:
    """The encoder side of `verify`: one encoder KV cache row per hypothesis as of its last completed block, and
    which of those rows each current hypothesis descends from."""

    def __init__(self, model, memories: Sequence[CompressedMemory], length: int, k: int):
        rate = memories[0].rate
        self.model, self.k = model, k
        self.slot_of = {end: j for j, end in enumerate(slot_positions(length, rate))}  # block end -> its slot
        self.slots = torch.stack([m.states for m in memories])  # (B, S, K, H)
        self.cache = None
        self.ancestors = torch.arange(len(memories) * k)  # (B k,)
        self.start = 0

    def follow(self, parents: torch.Tensor) -> None:
        self.ancestors = self.ancestors[parents.cpu()]

    def distances(self, position: int, history: torch.Tensor) -> torch.Tensor | None:
        """(B k,) distances to the memory if `position` completes a block, else None."""
        if position not in self.slot_of:
            return None
        if self.cache is not None:
            self.cache.reorder_cache(self.ancestors.to(history.device))
        block = history[:, self.start:position + 1]  # (B k, tokens of the block)
        states, self.cache = encode_block(self.model, block, self.cache)  # (B k, K, H)
        self.start = position + 1
        self.ancestors = torch.arange(block.shape[0])
        target = self.slots[:, self.slot_of[position]].to(states.device).repeat_interleave(self.k, dim=0)  # (B k, K, H)
        return state_distance(states, target)


@torch.no_grad()
def beam_search(model, memories: Sequence[CompressedMemory], length: int, num_beams: int,
                no_repeat_ngram_size: int = 0, verify: float = 0.0, anchored: bool = False) -> BeamResult:
    """Exactly `length` tokens from each memory (no prompt): the likeliest sequence `num_beams` hypotheses per
    memory find; `no_repeat_ngram_size` n > 0 forbids a hypothesis to repeat an n-gram of its own. With `verify`
    > 0 each memory is one window of `length` tokens, and a hypothesis also pays `verify` nats per unit of
    `state_distance` between each block it completes, re-encoded, and the memory's slot; `scores` include it.
    `anchored` (one window per memory too) writes `anchor_tokens` at the slot positions, scored as the decoder
    scores them."""
    if num_beams < 1:
        raise ValueError(f"`num_beams` must be at least 1, got {num_beams}")
    if length < 1:
        raise ValueError(f"`length` must be at least 1, got {length}")
    if verify < 0:
        raise ValueError(f"`verify` must be >= 0, got {verify}")
    rows, k = len(memories), num_beams
    if (verify or anchored) and any(m.num_windows != 1 or m.token_count != length for m in memories):
        raise ValueError("`verify` and `anchored` read one window of `length` tokens per memory: pass "
                         "`memory.windows()`")
    checker = _BlockChecker(model, memories, length, k) if verify else None
    anchors = {}  # position -> (B k,) the token every hypothesis must write there
    if anchored:
        ends = slot_positions(length, memories[0].rate)
        known = torch.tensor([anchor_tokens(model, m) for m in memories]).repeat_interleave(k, dim=0)  # (B k, S)
        anchors = {end: known[:, j] for j, end in enumerate(ends)}
    state = prefill(model, [m for m in memories for _ in range(k)], [[]] * (rows * k), length)
    state = with_static_cache(model, state, length - 1)
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
        if step in anchors:
            column = anchors[step].to(device)[:, None]
            log_probs = torch.full_like(log_probs, float("-inf")).scatter(1, column, log_probs.gather(1, column))
        vocab = log_probs.shape[-1]
        candidates = (scores[..., None] + log_probs.view(rows, k, vocab)).view(rows, k * vocab)
        scores, chosen = candidates.topk(k, dim=-1)  # (B, k)
        parents = (first_row + chosen // vocab).view(-1)  # (B k,): the cache row each new hypothesis extends
        history = torch.cat([history[parents], (chosen % vocab).view(-1, 1)], dim=1)
        if checker is not None:
            checker.follow(parents)
            distances = checker.distances(step, history)
            if distances is not None:
                scores = scores - verify * distances.view(rows, k).to(device)
        if step + 1 < length:
            if k > 1:  # one beam: every hypothesis extends its own row
                state.cache.reorder_cache(parents)
                state = dataclasses.replace(state, mask=state.mask[parents], positions=state.positions[parents])
            state = advance(model, state, history[:, -1])
    best = scores.argmax(dim=-1)  # (B,)
    winners = (first_row.squeeze(1) + best).tolist()
    return BeamResult([history[row].tolist() for row in winners], scores.gather(1, best[:, None]).squeeze(1).tolist())
