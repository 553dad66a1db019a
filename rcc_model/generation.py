"""Generation from memory: one prefill of `[slots + prompt]` with the bridges applied, then cached decoding.

Shapes: B rows, P_max slot positions (left-padded), T_max prompt tokens (left-padded), V vocabulary.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from transformers.generation.logits_process import NoRepeatNGramLogitsProcessor

from rcc_model.memory import CompressedMemory, MemoryMismatchError, MemoryViews
from rcc_model.prompts import Prompt, instruction_frame, prompt_ids, question_of, text_then_question
from rcc_model.reading import Reading, read_within


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
        if self.max_new_tokens < 1:
            raise ValueError(f"`max_new_tokens` must be at least 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"`temperature` must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
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
    with model.without_memory_adapters(slots == 0):
        out = model.decode(states, slot_mask, ids, mask, use_cache=True, logits_to_keep=1)
    full_mask = torch.cat([slot_mask, mask], dim=1)
    return DecodeState(logits=out.logits[:, -1].float(), cache=out.cache, mask=full_mask,
                       positions=full_mask.sum(-1), num_slots=slots, fingerprint=model.fingerprint)


def _feed(model, state: DecodeState, prompt: Sequence[int], keep: int) -> tuple[torch.Tensor, DecodeState]:
    """Run the decoder on `prompt` after `state` (its cache grows in place): the logits of the last `keep`
    positions, merged over views (1, keep, V) in float32, and the state after the prompt."""
    ids = torch.tensor([list(prompt)], dtype=torch.long, device=model.device).expand(state.mask.shape[0], -1)
    mask = torch.cat([state.mask, torch.ones_like(ids)], dim=1)
    positions = state.positions[:, None] + torch.arange(ids.shape[1], device=ids.device)
    if int(positions.max()) >= model.max_positions:
        raise ValueError(f"prompt of {len(prompt)} tokens does not fit after {state.num_slots} memory slots")
    with model.without_memory_adapters(state.num_slots == 0):
        out = model.decoder(input_ids=ids, attention_mask=mask, position_ids=positions, cache=state.cache,
                            use_cache=True, logits_to_keep=keep)
    logits = merge_views(out.logits.float(), state.views)
    return logits, DecodeState(logits[:, -1], out.cache, mask, state.positions + ids.shape[1], state.num_slots,
                               state.fingerprint, dict(state.extra))


def extend(model, state: DecodeState, prompt: Sequence[int]) -> DecodeState:
    """Feed more prompt tokens to a (cloned) single-row state (or one of views), e.g. a question after a
    memory prefix."""
    return _feed(model, state, prompt, keep=1)[1] if prompt else state


def continuation_logprob(model, state: DecodeState, ids: Sequence[int]) -> float:
    """Log-probability of `ids` as what follows `state`, from one forward pass (on a clone: `state` is kept)."""
    total = torch.log_softmax(state.logits[0], -1)[ids[0]]
    if len(ids) > 1:
        logits, _ = _feed(model, state.clone(), ids[:-1], keep=len(ids) - 1)
        log_probs = torch.log_softmax(logits[0], -1)  # (len(ids) - 1, V): the scores of ids[1:]
        total = total + log_probs.gather(1, torch.tensor(ids[1:], device=log_probs.device)[:, None]).sum()
    return float(total)


ABSTENTION_PROBE_TOKENS = 32


@dataclass
class AbstentionWeighed:
    """Where greedy decoding would write the model's abstention: by how many nats its log-probability beats the
    best other answer's (`gap`, end of turn included; negative where the other answer is likelier; a lower
    bound where the weighing stopped early), that answer's tokens so far (`other`), the state that decodes it
    from its start (`ruled_out`: the abstention's first token ruled out), and the state with every token of
    `other` but its last fed (`after_other`)."""

    gap: float
    other: list[int]
    ruled_out: DecodeState
    after_other: DecodeState


def keeps_abstention(abstention: str, margin: float | None, gap: float | None, other: str) -> bool:
    """`weigh_abstention`'s rule, given `abstention_gap`'s findings (`gap` None where greedy decoding would not
    write the abstention; `other` the other answer's text): whether greedy decoding's own answer stands, which
    it does unless the abstention leads by at most `margin` nats and the other answer is not the abstention
    again, spelt otherwise ("the document does not say.")."""
    if gap is None or margin is None or gap > margin:
        return True
    return other.strip().casefold() == abstention.strip().casefold()


@torch.no_grad()
def weigh_abstention(model, state: DecodeState, params: SamplingParams) -> tuple[DecodeState, list[int]]:
    """Where to decode an answer from, and the tokens already chosen before it: `(state, [])` as it is, or,
    where greedy decoding would write the model's abstention (`RCCConfig.abstention`) and the best other answer
    scores within `abstention_margin` nats of it (`abstention_gap`), that other answer as far as the weighing
    decoded it and the state after it, so no token is decoded twice. Sampling and batches are left alone."""
    margin = model.config.abstention_margin
    if margin is None or params.temperature > 0 or state.logits.shape[0] != 1:
        return state, []
    weighed = abstention_gap(model, state, params.max_new_tokens, margin)
    other = "" if weighed is None else model.tokenizer.decode(weighed.other, skip_special_tokens=True)
    if keeps_abstention(model.config.abstention, margin, None if weighed is None else weighed.gap, other):
        return state, []
    return weighed.after_other, weighed.other


@torch.no_grad()
def abstention_gap(model, state: DecodeState, max_new_tokens: int = ABSTENTION_PROBE_TOKENS,
                   margin: float | None = None) -> AbstentionWeighed | None:
    """How much likelier the model's abstention is than its best other answer after single-row `state`; None
    where greedy decoding would not write the abstention (or the model has none).

    Greedy decoding commits at the first token: the "The" of "The document does not say." can outweigh the
    first digit of a code whose tokens together are likelier than the whole abstention. So both are scored
    whole: the other answer is decoded greedily with that first token ruled out, on a copy of the state, up to
    `ABSTENTION_PROBE_TOKENS` (a longer answer is scored by that prefix), and no further once the gap is past
    `margin`. `state` is left unchanged.
    """
    if model.config.abstention is None:
        return None
    abstention = model.encode_text(model.config.abstention)
    first = torch.log_softmax(state.logits[0], -1)  # (V,)
    if int(first.argmax()) != abstention[0]:
        return None
    eos, end = eos_token_ids(model), answer_end_id(model)
    logits, _ = _feed(model, state.clone(), abstention, keep=len(abstention))  # (1, L, V) after each token
    if logits[0, :-1].argmax(-1).tolist() != abstention[1:]:
        return None  # greedy decoding writes another answer that only begins like the abstention
    following = torch.tensor([*abstention[1:], end], device=logits.device)[:, None]  # what each position scores
    abstain = float(first[abstention[0]] + torch.log_softmax(logits[0], -1).gather(1, following).sum())
    ruled_out = dataclasses.replace(state, logits=state.logits.index_fill(
        1, torch.tensor([abstention[0]], device=state.logits.device), float("-inf")))
    trial, other, score = ruled_out.clone(), [], 0.0
    limit = min(max_new_tokens, ABSTENTION_PROBE_TOKENS)
    while True:
        log_probs = first if not other else torch.log_softmax(trial.logits[0], -1)
        token = int(trial.logits[0].argmax())
        other.append(token)
        score += float(log_probs[token])
        if token in eos or len(other) == limit or (margin is not None and abstain - score > margin):
            return AbstentionWeighed(abstain - score, other, ruled_out, trial)
        trial = extend(model, trial, [token])


def sample(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None) -> torch.Tensor:
    """(B, V) logits -> (B,) next tokens."""
    if params.temperature == 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits / params.temperature, dim=-1)
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
    with model.without_memory_adapters(state.num_slots == 0):
        out = model.decoder(input_ids=tokens[:, None], attention_mask=mask, position_ids=state.positions[:, None],
                            cache=state.cache, use_cache=True)
    return DecodeState(merge_views(out.logits[:, -1].float(), state.views), out.cache, mask, state.positions + 1,
                       state.num_slots, state.fingerprint, state.extra)


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
    token ran on past every answer where the base model stops (stage 25, MODEL_CARD.md)."""
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


MemoryInput = CompressedMemory | MemoryViews | DecodeState


@dataclass
class GenerationInfo:
    """Filled in by `stream(..., info=...)`: why generation ended ("stop": EOS or a stop string;
    "length": the token limit) and how many tokens it read and wrote."""

    finish_reason: str = ""
    prompt_tokens: int = 0
    memory_slots: int = 0
    output_tokens: int = 0


class GenerationMixin:
    """Text and token generation from memory for `RCCModel` (which provides `decode`, `check_memory`,
    `tokenizer`, `fingerprint`, `max_positions`)."""

    def prefill_memory(self, memory: CompressedMemory | MemoryViews) -> DecodeState:
        """Run a memory's slots through the decoder once; pass the result instead of the memory to answer
        many prompts without recomputing it."""
        with torch.no_grad():
            if isinstance(memory, MemoryViews):
                return prefill_views(self, memory, [])
            return prefill(self, [memory], [[]])

    def _start(self, memory: MemoryInput, prompt: Sequence[int], params: SamplingParams) -> DecodeState:
        if isinstance(memory, DecodeState):
            if memory.fingerprint != self.fingerprint:
                raise MemoryMismatchError("this prefilled memory was made by another model")
            return extend(self, memory.clone(), prompt)
        if isinstance(memory, MemoryViews):
            return prefill_views(self, memory, prompt, params.max_new_tokens)
        return prefill(self, [memory], [prompt], params.max_new_tokens)

    @torch.no_grad()
    def generate_ids(self, memory: MemoryInput | Sequence[CompressedMemory],
                     prompt_ids: Sequence[int] | Sequence[Sequence[int]] | None = None, *,
                     max_new_tokens: int = 256, temperature: float = 0.0, top_p: float = 1.0,
                     seed: int | None = None, min_new_tokens: int = 0,
                     no_repeat_ngram_size: int = 0) -> list[int] | list[list[int]]:
        """Token ids generated from memory (+ prompt ids) until EOS or `max_new_tokens`; greedy by default.
        EOS cannot end a row before `min_new_tokens`; `no_repeat_ngram_size` as in `SamplingParams`.

        Pass lists of memories and prompts to generate for all of them in one padded batch.
        """
        params = SamplingParams(max_new_tokens, temperature, top_p, seed, min_new_tokens, no_repeat_ngram_size)
        if isinstance(memory, (CompressedMemory, MemoryViews, DecodeState)):
            state = self._start(memory, list(prompt_ids or []), params)
            batch = False
        else:
            memories = list(memory)
            prompts = [list(p) for p in prompt_ids] if prompt_ids is not None else [[] for _ in memories]
            state = prefill(self, memories, prompts, params.max_new_tokens)
            batch = True
        eos = eos_token_ids(self)
        outputs: list[list[int]] = [[] for _ in range(state.logits.shape[0])]
        done = [False] * len(outputs)
        for tokens in decode_tokens(self, state, params):
            for row, token in enumerate(tokens.tolist()):
                if not done[row]:
                    done[row] = token in eos
                    if not done[row]:
                        outputs[row].append(token)
            if all(done):
                break
        return outputs if batch else outputs[0]

    def _text_rows(self, state: DecodeState, params: SamplingParams, stop: Sequence[str],
                   infos: Sequence[GenerationInfo] = (), written: Sequence[int] = ()) -> Iterator[tuple[int, str]]:
        """Yield (row, text piece) as tokens arrive; a row ends at EOS, at a stop string, or at the limit.
        `written` are tokens of a single row chosen already (`weigh_abstention`), all but the last fed to `state`."""
        eos = eos_token_ids(self)
        streams = [TextStream(self._require_tokenizer(), stop) for _ in range(state.logits.shape[0])]
        done = [False] * len(streams)
        counts = [0] * len(streams)
        for tokens in self._tokens_after(state, params, written):
            for row, token in enumerate(tokens.tolist()):
                if done[row]:
                    continue
                counts[row] += 1
                if token in eos:
                    done[row] = True
                    piece = streams[row].finish()
                else:
                    piece = streams[row].push(token)
                    done[row] = streams[row].stopped
                if piece:
                    yield row, piece
            if all(done):
                break
        for row, stream in enumerate(streams):
            if not stream.stopped and (piece := stream.finish()):
                yield row, piece
        for info, finished, count in zip(infos, done, counts):
            info.finish_reason, info.output_tokens = ("stop" if finished else "length"), count

    def _tokens_after(self, state: DecodeState, params: SamplingParams, written: Sequence[int]
                      ) -> Iterator[torch.Tensor]:
        """`decode_tokens` after `written`, tokens already chosen of which `state` has fed all but the last:
        those first, then what follows them."""
        for token in written:
            yield torch.tensor([token])
        if len(written) < params.max_new_tokens and not (written and written[-1] in eos_token_ids(self)):
            yield from decode_tokens(self, extend(self, state, written[-1:]), dataclasses.replace(
                params, max_new_tokens=params.max_new_tokens - len(written)))

    def stream(self, memory: MemoryInput, prompt: Prompt = None, *, max_new_tokens: int = 256,
               temperature: float = 0.0, top_p: float = 1.0, seed: int | None = None,
               stop: Sequence[str] = (), info: GenerationInfo | None = None) -> Iterator[str]:
        """Yield the answer's text piece by piece as it is generated; `info`, if given, is filled in.

        A greedy answer is the model's abstention only where it outscores the best other answer by the
        model's `abstention_margin` (`weigh_abstention`)."""
        params = SamplingParams(max_new_tokens, temperature, top_p, seed)
        ids = prompt_ids(self.tokenizer, prompt)
        with torch.no_grad():
            state, written = weigh_abstention(self, self._start(memory, ids, params), params)
            if info is not None:
                info.prompt_tokens, info.memory_slots = len(ids), state.num_slots
            for _, piece in self._text_rows(state, params, stop, [info] if info is not None else [], written):
                yield piece

    @torch.no_grad()
    def generate(self, memory: MemoryInput | Sequence[CompressedMemory], prompt: Prompt | list[Prompt] = None,
                 *, max_new_tokens: int = 256, temperature: float = 0.0, top_p: float = 1.0,
                 seed: int | None = None, stop: Sequence[str] = ()) -> str | list[str]:
        """Text generated from memory and a prompt (a string, token ids, or chat messages).

        A list of memories with a list of as many prompts (or None) generates for all pairs in one batch,
        without weighing the abstention; one answer weighs it as `stream` does.
        """
        params = SamplingParams(max_new_tokens, temperature, top_p, seed)
        if isinstance(memory, (CompressedMemory, MemoryViews, DecodeState)):
            state, written = weigh_abstention(self, self._start(memory, prompt_ids(self.tokenizer, prompt), params),
                                              params)
            rows = 1
        else:
            memories = list(memory)
            prompts = [None] * len(memories) if prompt is None else list(prompt)
            if len(prompts) != len(memories):
                raise ValueError(f"pass one prompt per memory: {len(memories)} memories, {len(prompts)} prompts")
            state = prefill(self, memories, [prompt_ids(self.tokenizer, p) for p in prompts],
                            params.max_new_tokens)
            rows, written = len(memories), []
        texts = [""] * rows
        for row, piece in self._text_rows(state, params, stop, written=written):
            texts[row] += piece
        return texts[0] if isinstance(memory, (CompressedMemory, MemoryViews, DecodeState)) else texts

    @torch.no_grad()
    def generate_json(self, memory: MemoryInput, prompt: Prompt, schema: dict, *,
                      max_new_tokens: int | None = None) -> object:
        """A JSON value matching `schema` (valid by construction), generated from memory and a prompt.

        `max_new_tokens` caps the tokens the model writes into values (strings end early, arrays stop at
        their minimum, numbers keep one digit); the structure is always completed, so the value stays valid.
        See `rcc_model.structured` for the supported schema subset; anything else is a `ValueError`.
        """
        from rcc_model.structured import generate_json

        return generate_json(self, self.prefill_prompt(memory, prompt), schema, max_new_tokens)[0]

    @torch.no_grad()
    def prefill_prompt(self, memory: MemoryInput, prompt: Prompt) -> DecodeState:
        """The decoder state after reading memory and a prompt: the start of any custom decoding."""
        return self._start(memory, prompt_ids(self.tokenizer, prompt), SamplingParams(max_new_tokens=1))

    @torch.no_grad()
    def ask(self, memory: MemoryInput, question: str | None = None, *, max_new_tokens: int = 256,
            stop: Sequence[str] = (), **sampling) -> str:
        """Answer a question about the memory through the base model's chat template.

        `question=None` is the paper's instruction-reconstruction mode: the question was compressed with
        the context (`compress(context + "\n\n" + question)`); the decoder first regenerates it from
        memory, then answers. Only the answer is returned.
        """
        if question is not None:
            return self.generate(memory, [{"role": "user", "content": question}],
                                 max_new_tokens=max_new_tokens, stop=stop, **sampling)
        tokenizer = self._require_tokenizer()
        frame = instruction_frame(tokenizer)
        params = SamplingParams(max_new_tokens, **sampling)
        state = self._start(memory, prompt_ids(tokenizer, frame.header), params)
        text = TextStream(tokenizer, skip_special_tokens=False)
        # Where decoding stops: the text of any token the model ends an answer with. The question's turn may end
        # with one of them, so the answer is cut at their text rather than decoding stopping at the token.
        ends = [end for end in (tokenizer.decode([i]) for i in sorted(eos_token_ids(self))) if end]
        for tokens in decode_tokens(self, state, params):
            text.push(int(tokens[0]))
            _, found, answer = text.text.partition(frame.turn_end)
            if found and any(end in answer for end in ends):
                break
        _, found, answer = text.text.partition(frame.turn_end)
        for s in (*ends, *stop):
            answer = answer.split(s)[0] if s else answer
        return answer.strip()

    @torch.no_grad()
    def reconstruct(self, memory: CompressedMemory, *, batch_size: int = 8,
                    no_repeat_ngram_size: int = 0, num_beams: int | None = None, verify: float | None = None,
                    anchored: bool | None = None) -> str | list[int]:
        """The text the memory holds, regenerated window by window (batched); token ids without a tokenizer.
        `no_repeat_ngram_size` n > 0 keeps each window's text from repeating an n-gram of its own;
        `num_beams` > 1 decodes each window by beam search (k times the rows), which can also check each block
        it writes against the memory (`verify`, nats per unit of distance) and write the token the memory
        holds at each slot position (`anchored`): `rcc_model.beam_search`. Each left None is the model's own
        setting (`RCCConfig.reconstruct_*`; the packaged default's: 8 beams, verify 30, anchored);
        `num_beams=1, verify=0, anchored=False` is greedy decoding, about 3x faster.

        Each window is decoded from its own slots, as in training, so length is not limited by the
        decoder's position range. The memory records each window's token count, so a window is decoded to
        exactly that length: an early EOS would only cut the text short.
        """
        rows = self.reconstruct_windows(memory, batch_size=batch_size, no_repeat_ngram_size=no_repeat_ngram_size,
                                        num_beams=num_beams, verify=verify, anchored=anchored)
        ids = [token for row in rows for token in row]
        if self.tokenizer is None:
            return ids
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    @torch.no_grad()
    def reconstruct_windows(self, memory: CompressedMemory, *, batch_size: int = 8, no_repeat_ngram_size: int = 0,
                            num_beams: int | None = None, verify: float | None = None,
                            anchored: bool | None = None) -> list[list[int]]:
        """The token ids of each window's text, as `reconstruct` regenerates them (same arguments)."""
        from rcc_model.beam_search import Search, beam_search

        self.check_memory(memory)
        search = Search.of(self.config, num_beams, verify, anchored)
        texts: list[list[int]] = []
        windows = memory.windows()
        for start in range(0, len(windows), batch_size):
            chunk = windows[start:start + batch_size]
            if not search.greedy:
                # the best hypothesis of a longer length, cut, is not the best of its own: search each length apart
                found = {}
                for length in {m.token_count for m in chunk}:
                    same = [i for i, m in enumerate(chunk) if m.token_count == length]
                    rows = beam_search(self, [chunk[i] for i in same], length, search.num_beams,
                                       no_repeat_ngram_size, search.verify, search.anchored).ids
                    found.update(zip(same, rows))
                rows = [found[i] for i in range(len(chunk))]
            else:
                length = max(m.token_count for m in chunk)
                rows = self.generate_ids(chunk, max_new_tokens=length, min_new_tokens=length,
                                         no_repeat_ngram_size=no_repeat_ngram_size)
            texts += [list(row[: window.token_count]) for window, row in zip(chunk, rows)]
        return texts

    @torch.no_grad()
    def reconstruction_prompt(self, memory: CompressedMemory, prompt: str | Sequence[dict],
                              read_slots: int | None = None, rank: Mapping | None = None,
                              **search) -> tuple[str | list[dict], Reading]:
        """`prompt` with the text the memory holds put before its question (its last user turn, or the whole
        string), and what was read: the prompt the decoder, without memory, answers as the base model would
        from the original text (`ask_from_reconstruction`).

        Why: the decoder regenerates a window far more faithfully than it answers from the window's slots
        (PwC, the packaged default: 0.29 token F1 from the checked reconstruction, 0.19 from a greedy one, 0.11
        from the slots, 0.28 for the base with the original text; MODEL_CARD). It costs the reconstruction
        (seconds per window on a CPU) and an answer whose KV cache holds the text read, r times the slots it
        came from. With `read_slots`, a memory larger than that is read through the reconstructed windows that
        best match the question (`rcc_model.reading.read_within`, BM25 over the reconstructions: the memory
        alone, no stored text). `rank` (`reconstruct`'s settings, e.g. `rcc_model.beam_search.ANCHORED_GREEDY`)
        reconstructs the windows for that ranking alone, more cheaply, and only the windows read again with
        `search`; None ranks on the reconstructions read.
        `search` is `reconstruct`'s (`num_beams`, `verify`, `anchored`, ...).
        """
        question = question_of(prompt)
        tokenizer = self._require_tokenizer()

        def texts(windows: CompressedMemory, settings: Mapping) -> list[str]:
            return [tokenizer.decode(ids, skip_special_tokens=True)
                    for ids in self.reconstruct_windows(windows, **settings)]

        budget = read_slots or max(memory.num_slots, 1)
        ranked = rank is not None and memory.num_slots > budget
        reading = read_within(question, [memory], [texts(memory, rank if ranked else search)], budget)
        if ranked:
            reading.texts = texts(reading.memory, search)
        read = text_then_question("".join(reading.texts or []), question)
        if isinstance(prompt, str):
            return read, reading
        return [*prompt[:-1], {**prompt[-1], "content": read}], reading

    @torch.no_grad()
    def ask_from_reconstruction(self, memory: CompressedMemory, question: str, *, read_slots: int | None = None,
                                max_new_tokens: int = 256, stop: Sequence[str] = (), search: dict | None = None,
                                **sampling) -> str:
        """Answer a question from the memory's reconstructed text, which the decoder reads without memory (the
        untouched base model) in its chat template: `reconstruction_prompt`, whose `read_slots` this takes, and
        its other settings in `search` (`reconstruct`'s, the model's own where left out, and `rank`).

        Example:
            .. code-block:: python

                memory = model.compress(report)           # stored, without the text
                model.ask_from_reconstruction(memory, "Who signed the contract?", read_slots=64)
                # rank the windows on cheap reconstructions; only the one read is decoded with the checks
                from rcc_model.beam_search import ANCHORED_GREEDY

                model.ask_from_reconstruction(memory, "Who signed the contract?", read_slots=64,
                                              search={"rank": ANCHORED_GREEDY})
        """
        prompt, _ = self.reconstruction_prompt(memory, [{"role": "user", "content": question}], read_slots,
                                               **(search or {}))
        return self.generate(self.empty_memory(), prompt, max_new_tokens=max_new_tokens, stop=stop, **sampling)
