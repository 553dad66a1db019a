"""Weighing the model's abstention ("The document does not say.") against its best other answer, both scored
whole, so that a greedy answer is the abstention exactly where the abstention leads by more than the model's
`abstention_margin` nats: a positive margin keeps only clear abstentions, a negative one also lets the
abstention replace an answer it trails by less than that (a model that would rather decline than guess)."""

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
    """The abstention against the best other answer after a state: by how many nats its log-probability beats
    that answer's (`gap`, end of turn included; negative where the other answer is likelier; a lower bound where
    the weighing stopped early), that answer's tokens so far (`other`), the state that decodes it from its start
    (`ruled_out`: the abstention's first token ruled out where greedy decoding writes the abstention, else the
    state itself), the state with every token of `other` but its last fed (`after_other`), and whether greedy
    decoding writes the abstention (`abstains`; else `other` is greedy decoding's own answer)."""

    gap: float
    other: list[int]
    ruled_out: DecodeState
    after_other: DecodeState
    abstains: bool = True


def greedy_answer_stands(abstention: str, margin: float | None, gap: float | None, other: str,
                         abstains: bool = True) -> bool:
    """`weigh_abstention`'s rule, given `abstention_gap`'s findings (`gap` None where it weighed nothing; `other`
    the other answer's text; `abstains` whether greedy decoding writes the abstention): whether greedy decoding's
    own answer stands. The answer is the abstention where it leads by more than `margin`; a greedy abstention
    whose other answer is the abstention again, spelt otherwise ("the document does not say."), stands."""
    if gap is None or margin is None:
        return True
    if not abstains:
        return gap <= margin
    return gap > margin or other.strip().casefold() == abstention.strip().casefold()


@torch.no_grad()
def weigh_abstention(model, state: DecodeState, params: SamplingParams) -> tuple[DecodeState, list[int]]:
    """Where to decode an answer from, and the tokens already chosen before it: `(state, [])` as it is; or the
    other answer as far as the weighing decoded it and the state after it, so no token is decoded twice; or the
    abstention, whole and ended, where it replaces greedy decoding's answer (`abstention_margin` below 0).
    Sampling and batches are left alone."""
    margin = model.config.abstention_margin
    if margin is None or params.temperature > 0 or state.logits.shape[0] != 1:
        return state, []
    weighed = abstention_gap(model, state, params.max_new_tokens, margin, weigh_answers=margin < 0)
    if weighed is None:
        return state, []
    other = model.tokenizer.decode(weighed.other, skip_special_tokens=True)
    stands = greedy_answer_stands(model.config.abstention, margin, weighed.gap, other, weighed.abstains)
    if stands != weighed.abstains:  # the other answer: greedy decoding's own, or what its abstention gives way to
        return weighed.after_other, weighed.other
    if stands:  # greedy decoding's abstention
        return state, []
    return state, [*model.encode_text(model.config.abstention), answer_end_id(model)][:params.max_new_tokens]


@torch.no_grad()
def abstention_gap(model, state: DecodeState, max_new_tokens: int = ABSTENTION_PROBE_TOKENS,
                   margin: float | None = None, weigh_answers: bool = False) -> AbstentionWeighed | None:
    """How much likelier the model's abstention is than its best other answer after single-row `state`; None
    where the model has no abstention, where greedy decoding writes another answer that only begins like it, and
    where greedy decoding writes another answer and `weigh_answers` is False.

    Greedy decoding commits at the first token: the "The" of "The document does not say." can outweigh the
    first digit of a code whose tokens together are likelier than the whole abstention, and the reverse. So both
    are scored whole: the abstention in one pass, the other answer decoded greedily (the abstention's first token
    ruled out where greedy decoding begins it) on a copy of the state, up to `ABSTENTION_PROBE_TOKENS` (a longer
    answer is scored by that prefix), and no further once the gap is past `margin`. `state` is left unchanged.
    """
    if model.config.abstention is None:
        return None
    abstention = model.encode_text(model.config.abstention)
    first = torch.log_softmax(state.logits[0], -1)  # (V,)
    abstains = int(first.argmax()) == abstention[0]
    if not (abstains or weigh_answers):
        return None
    eos, end = eos_token_ids(model), answer_end_id(model)
    logits, _ = feed(model, state.clone(), abstention, keep=len(abstention))  # (1, L, V) after each token
    if abstains and logits[0, :-1].argmax(-1).tolist() != abstention[1:]:
        return None  # greedy decoding writes another answer that only begins like the abstention
    following = torch.tensor([*abstention[1:], end], device=logits.device)[:, None]  # what each position scores
    abstain = float(first[abstention[0]] + torch.log_softmax(logits[0], -1).gather(1, following).sum())
    ruled_out = dataclasses.replace(state, logits=state.logits.index_fill(
        1, torch.tensor([abstention[0]], device=state.logits.device), float("-inf"))) if abstains else state
    limit = min(max_new_tokens, ABSTENTION_PROBE_TOKENS)
    trial, other, score = with_static_cache(model, ruled_out.clone(), limit), [], 0.0
    while True:
        log_probs = first if not other else torch.log_softmax(trial.logits[0], -1)
        token = int(trial.logits[0].argmax())
        other.append(token)
        score += float(log_probs[token])
        if token in eos or len(other) == limit or (margin is not None and abstain - score > margin):
            return AbstentionWeighed(abstain - score, other, ruled_out, trial, abstains)
        trial = extend(model, trial, [token])
