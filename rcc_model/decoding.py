"""Decoding primitives: one prefill of `[slots + prompt]` with the bridges applied, then cached decoding one
token at a time (greedy or sampled), shared by generation, beam search, structured output and the abstention
weighing.

Shapes: B rows, P_max slot positions (left-padded), T_max prompt tokens (left-padded), V vocabulary.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from numbers import Integral, Real

import torch
from transformers.generation.logits_process import NoRepeatNGramLogitsProcessor

from rcc_model.adapters import without_memory_adapters
from rcc_model.memory import CompressedMemory, MemoryViews
from rcc_model.prompts import token_ids
from rcc_model.static_decoding import StaticCache


@dataclass(frozen=True)
class SamplingParams:
    """Greedy when `temperature` is 0; otherwise temperature + nucleus (`top_p`) sampling. EOS is
    suppressed for the first `min_new_tokens` steps (reconstruction knows each window's length). With
    `no_repeat_ngram_size` n > 0, no row repeats an n-gram of tokens it generated (as in transformers), which
    stops a decoder from looping over a passage it has already written."""

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    min_new_tokens: int = 0
    no_repeat_ngram_size: int = 0

    def __post_init__(self) -> None:
        for name in ("max_new_tokens", "min_new_tokens", "no_repeat_ngram_size"):
            if isinstance(getattr(self, name), bool) or not isinstance(getattr(self, name), Integral):
                raise TypeError(f"`{name}` must be an integer, got {getattr(self, name)!r}")
        for name in ("temperature", "top_p"):
            if isinstance(getattr(self, name), bool) or not isinstance(getattr(self, name), Real):
                raise TypeError(f"`{name}` must be a number, got {getattr(self, name)!r}")
        if self.max_new_tokens < 1:
            raise ValueError(f"`max_new_tokens` must be at least 1, got {self.max_new_tokens}")
        if not (math.isfinite(self.temperature) and self.temperature >= 0):
            raise ValueError(f"`temperature` must be a finite number >= 0 (0 is greedy), got {self.temperature}")
        if not 0 < self.top_p <= 1:  # also refuses nan
            raise ValueError(f"`top_p` must be in (0, 1], got {self.top_p}")
        if not 0 <= self.min_new_tokens <= self.max_new_tokens:
            raise ValueError(f"`min_new_tokens` must be in [0, max_new_tokens], got {self.min_new_tokens}")
        if self.no_repeat_ngram_size < 0:
            raise ValueError(f"`no_repeat_ngram_size` must be >= 0, got {self.no_repeat_ngram_size}")


@dataclass
class DecodeState:
    """What cached decoding needs after a prefill: next-token logits (B, V), the KV cache, the attention
    mask over everything cached so far (B, P + T + generated), and each row's next position (B,). Read from
    `MemoryViews`, the cache, mask and positions hold one row per view and the logits one row, their merge."""

    logits: torch.Tensor
    cache: object
    mask: torch.Tensor
    positions: torch.Tensor
    num_slots: int = 0
    fingerprint: str = ""
    extra: dict = field(default_factory=dict)

    def clone(self) -> DecodeState:
        return DecodeState(self.logits, copy.deepcopy(self.cache), self.mask.clone(), self.positions.clone(),
                           self.num_slots, self.fingerprint, dict(self.extra))

    @property
    def views(self) -> int:
        """How many cache rows are views of one memory (`MemoryViews`) decoding one answer; 0 = none."""
        return self.extra.get("views", 0)


def merge_views(logits: torch.Tensor, views: int) -> torch.Tensor:
    """(views, ..., V) next-token logits of one answer read from several views -> (1, ..., V): the mean of
    their log-probabilities. Unchanged without views."""
    return torch.log_softmax(logits, dim=-1).mean(0, keepdim=True) if views else logits


def prefill_views(model, memory: MemoryViews, prompt: Sequence[int], max_new_tokens: int = 0) -> DecodeState:
    """`prefill` of every view with the same prompt; the state decodes one answer from all of them."""
    state = prefill(model, list(memory.views), [prompt] * len(memory.views), max_new_tokens)
    state.extra["views"] = len(memory.views)
    state.logits = merge_views(state.logits, state.views)
    return state


def prefill(model, memories: Sequence[CompressedMemory], prompts: Sequence[Sequence[int]],
            max_new_tokens: int = 0) -> DecodeState:
    """Run `[slots + prompt]` for each (memory, prompt) pair once, left-padded into one batch."""
    if len(memories) != len(prompts):
        raise ValueError(f"{len(memories)} memories for {len(prompts)} prompts")
    if not memories:
        raise ValueError("nothing to generate: no memories given")
    for memory in memories:
        model.check_memory(memory)
    prompts = [token_ids(p, model.vocab_size, "the prompt") for p in prompts]
    limit = model.max_positions
    for memory, prompt in zip(memories, prompts):
        needed = memory.num_slots + len(prompt) + max_new_tokens
        if needed > limit:
            raise ValueError(
                f"{memory.num_slots} memory slots + {len(prompt)} prompt tokens + {max_new_tokens} new tokens "
                f"= {needed} positions, more than the decoder's {limit}: compress less text, shorten the "
                "prompt, or select part of the memory"
            )
    device = model.device
    rows, slots, tokens = len(memories), max(m.num_slots for m in memories), max(len(p) for p in prompts)
    first = memories[0].states
    states = torch.zeros(rows, slots, *first.shape[1:], dtype=first.dtype, device=device)  # (B, P, K, H)
    slot_mask = torch.zeros(rows, slots, dtype=torch.long, device=device)
    ids = torch.zeros(rows, tokens, dtype=torch.long, device=device)
    mask = torch.zeros(rows, tokens, dtype=torch.long, device=device)
    for row, (memory, prompt) in enumerate(zip(memories, prompts)):
        if memory.num_slots:
            states[row, slots - memory.num_slots:] = memory.states.to(device)
            slot_mask[row, slots - memory.num_slots:] = 1
        if prompt:
            ids[row, tokens - len(prompt):] = torch.tensor(list(prompt), dtype=torch.long)
            mask[row, tokens - len(prompt):] = 1
    with without_memory_adapters(model, slots == 0):
        out = model.decode(states, slot_mask, ids, mask, use_cache=True, logits_to_keep=1)
    full_mask = torch.cat([slot_mask, mask], dim=1)
    return DecodeState(logits=out.logits[:, -1].float(), cache=out.cache, mask=full_mask,
                       positions=full_mask.sum(-1), num_slots=slots, fingerprint=model.fingerprint)


def feed(model, state: DecodeState, prompt: Sequence[int], keep: int) -> tuple[torch.Tensor, DecodeState]:
    """Run the decoder on `prompt` after `state` (its cache grows in place): the logits of the last `keep`
    positions, merged over views (1, keep, V) in float32, and the state after the prompt."""
    ids = torch.tensor([list(prompt)], dtype=torch.long, device=model.device).expand(state.mask.shape[0], -1)
    mask = torch.cat([state.mask, torch.ones_like(ids)], dim=1)
    positions = state.positions[:, None] + torch.arange(ids.shape[1], device=ids.device)
    if int(positions.max()) >= model.max_positions:
        raise ValueError(f"prompt of {len(prompt)} tokens does not fit after {state.num_slots} memory slots")
    with without_memory_adapters(model, state.num_slots == 0):
        out = model.decoder(input_ids=ids, attention_mask=mask, position_ids=positions, cache=state.cache,
                            use_cache=True, logits_to_keep=keep)
    logits = merge_views(out.logits.float(), state.views)
    return logits, DecodeState(logits[:, -1], out.cache, mask, state.positions + ids.shape[1], state.num_slots,
                               state.fingerprint, dict(state.extra))


def extend(model, state: DecodeState, prompt: Sequence[int]) -> DecodeState:
    """Feed more prompt tokens to a (cloned) single-row state (or one of views), e.g. a question after a
    memory prefix; a state on a `StaticCache` (decoding) takes one token at a time, as decoding feeds them."""
    if not prompt:
        return state
    if isinstance(state.cache, StaticCache):
        if len(prompt) != 1:
            raise ValueError(f"a decoding state takes one token at a time, got {len(prompt)}")
        tokens = torch.tensor(list(prompt), device=state.logits.device).expand(state.mask.shape[0])
        return advance(model, state, tokens)
    return feed(model, state, prompt, keep=1)[1]


def continuation_logprob(model, state: DecodeState, ids: Sequence[int]) -> float:
    """Log-probability of `ids` as what follows `state`, from one forward pass (on a clone: `state` is kept)."""
    total = torch.log_softmax(state.logits[0], -1)[ids[0]]
    if len(ids) > 1:
        logits, _ = feed(model, state.clone(), ids[:-1], keep=len(ids) - 1)
        log_probs = torch.log_softmax(logits[0], -1)  # (len(ids) - 1, V): the scores of ids[1:]
        total = total + log_probs.gather(1, torch.tensor(ids[1:], device=log_probs.device)[:, None]).sum()
    return float(total)


def sample(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None) -> torch.Tensor:
    """(B, V) logits -> (B,) next tokens."""
    if params.temperature == 0:
        return logits.argmax(dim=-1)
    # from the best token's score, in float64 (the temperature's own precision), so that a tiny temperature
    # sharpens to greedy instead of overflowing
    scaled = (logits - logits.amax(dim=-1, keepdim=True)).double() / params.temperature
    probs = torch.softmax(scaled, dim=-1).to(logits.dtype)
    if params.top_p < 1:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        outside = sorted_probs.cumsum(-1) - sorted_probs > params.top_p  # keep the smallest nucleus
        sorted_probs = sorted_probs.masked_fill(outside, 0)
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
    return torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(-1).to(logits.device)


def advance(model, state: DecodeState, tokens: torch.Tensor) -> DecodeState:
    """Feed one token per cache row, (rows,), after `state`: the state one position on (its cache grown in
    place), its logits merged over views."""
    mask = torch.cat([state.mask, torch.ones_like(state.mask[:, :1])], dim=1)
    with without_memory_adapters(model, state.num_slots == 0):
        if isinstance(state.cache, StaticCache):
            logits = state.cache.decoder.step(state.cache, tokens, state.positions, mask)
        else:
            out = model.decoder(input_ids=tokens[:, None], attention_mask=mask, position_ids=state.positions[:, None],
                                cache=state.cache, use_cache=True)
            logits = out.logits[:, -1]
    return DecodeState(merge_views(logits.float(), state.views), state.cache, mask, state.positions + 1,
                       state.num_slots, state.fingerprint, state.extra)


def with_static_cache(model, state: DecodeState, steps: int) -> DecodeState:
    """`state` with its cache copied into a `StaticCache` with room for `steps` more tokens, on which `advance`
    runs the decoder's `StaticDecoder` step instead of the stock `forward` and its per-call overhead (the same
    logits: `rcc_model.static_decoding` says how far). `state` itself, given room for `steps` more, where its
    cache is one already; unchanged where there is no step to take or the decoder has no such step."""
    if isinstance(state.cache, StaticCache):
        state.cache.reserve(steps)
        return state
    cache = StaticCache.of(model, state.cache, steps) if steps > 0 else None
    return state if cache is None else replace(state, cache=cache)


@torch.no_grad()
def decode_tokens(model, state: DecodeState, params: SamplingParams) -> Iterator[torch.Tensor]:
    """Yield (B,) tokens, one step at a time, for up to `params.max_new_tokens` steps.

    The caller decides when a row is finished and stops iterating when all are; the hooks are not
    active here: only the prefill contains slot positions.
    """
    generator = None
    if params.seed is not None:
        generator = torch.Generator().manual_seed(params.seed)
    logits = state.logits
    eos = torch.tensor(sorted(eos_token_ids(model)), dtype=torch.long, device=logits.device)
    blocker = NoRepeatNGramLogitsProcessor(params.no_repeat_ngram_size) if params.no_repeat_ngram_size else None
    generated = torch.zeros(logits.shape[0], 0, dtype=torch.long, device=logits.device)  # (B, t), for the blocker
    state = with_static_cache(model, state, params.max_new_tokens - 1)
    for step in range(params.max_new_tokens):
        if step < params.min_new_tokens:  # out of place: a forked DecodeState shares its logits
            logits = logits.index_fill(1, eos, float("-inf"))
        if blocker is not None:  # out of place too
            logits = blocker(generated, logits)
        tokens = sample(logits, params, generator)
        if blocker is not None:
            generated = torch.cat([generated, tokens[:, None]], dim=1)
        yield tokens
        if step + 1 == params.max_new_tokens:
            return
        state = advance(model, state, tokens.expand(state.mask.shape[0]))  # views: the same token in every row
        logits = state.logits


def eos_token_ids(model) -> set[int]:
    """The tokens that end an answer: the decoder's generation config's (where `generate` stops), else its model
    config's, else the tokenizer's. The first that names any, not their union: transformers 5.17 converts
    SmolLM2's GGUF with `<|im_start|>` as the tokenizer's EOS, and a model trained to end its answers with that
    token runs on past every answer where the base model stops."""
    for source in (model.decoder.generation_config, model.decoder.config, model.tokenizer):
        value = getattr(source, "eos_token_id", None)
        if isinstance(value, int):
            return {value}
        if isinstance(value, (list, tuple)) and value:
            return {int(v) for v in value}
    return set()


def answer_end_id(model) -> int:
    """The one token written after an answer (training targets, a scored abstention): the tokenizer's EOS where
    the model stops at it, else the smallest of the tokens it stops at."""
    eos = eos_token_ids(model)
    if not eos:
        raise ValueError("the model names no end-of-sequence token (generation config, config or tokenizer)")
    tokenizer_eos = getattr(model.tokenizer, "eos_token_id", None)
    return tokenizer_eos if tokenizer_eos in eos else min(eos)


MemoryInput = CompressedMemory | MemoryViews | DecodeState
