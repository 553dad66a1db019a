"""Weighing the model's abstention ("The document does not say.") against its best other answer, so that a
greedy answer abstains only where the abstention is clearly the likelier answer."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from rcc_model.decoding import (
    DecodeState,
    SamplingParams,
    answer_end_id,
    eos_token_ids,
    extend,
    feed,
    with_static_cache,
)

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
    logits, _ = feed(model, state.clone(), abstention, keep=len(abstention))  # (1, L, V) after each token
    if logits[0, :-1].argmax(-1).tolist() != abstention[1:]:
        return None  # greedy decoding writes another answer that only begins like the abstention
    following = torch.tensor([*abstention[1:], end], device=logits.device)[:, None]  # what each position scores
    abstain = float(first[abstention[0]] + torch.log_softmax(logits[0], -1).gather(1, following).sum())
    ruled_out = dataclasses.replace(state, logits=state.logits.index_fill(
        1, torch.tensor([abstention[0]], device=state.logits.device), float("-inf")))
    limit = min(max_new_tokens, ABSTENTION_PROBE_TOKENS)
    trial, other, score = with_static_cache(model, ruled_out.clone(), limit), [], 0.0
    while True:
        log_probs = first if not other else torch.log_softmax(trial.logits[0], -1)
        token = int(trial.logits[0].argmax())
        other.append(token)
        score += float(log_probs[token])
        if token in eos or len(other) == limit or (margin is not None and abstain - score > margin):
            return AbstentionWeighed(abstain - score, other, ruled_out, trial)
        trial = extend(model, trial, [token])
