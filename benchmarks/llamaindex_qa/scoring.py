"""Scoring the LlamaIndex QA benchmark: whether an answer is correct, and a bootstrap interval on accuracy.

An answer is correct when, normalised (punctuation made spaces, so that "fn=35" holds "35", then as SQuAD
normalises: `rcc_model.evaluation.metrics.normalize_answer`, lower case, no articles), it contains, as whole
words, one accepted spelling of every answer group of its question. A question whose answer is absent is
answered correctly by an abstention: the model's own ("The document does not say.", `RCCConfig.abstention`)
or one of the phrases by which the base model declines (`ABSTENTIONS`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from rcc_model.data.qa import NOT_IN_DOCUMENT
from rcc_model.evaluation.metrics import normalize_answer

ABSTENTIONS = (NOT_IN_DOCUMENT, "does not say", "doesn't say", "does not mention", "not mentioned",
               "does not provide", "not provided", "does not specify", "not specified", "does not state",
               "not stated", "does not contain", "no information", "not enough information", "do not know",
               "don't know", "cannot answer", "can't answer", "cannot be determined", "unable to determine",
               "no mention")


def normalized(text: str) -> str:
    return normalize_answer(re.sub(r"[^\w\s]", " ", text))


def contains(text: str, spelling: str) -> bool:
    """Whether `text` holds `spelling` as whole words, both `normalized`."""
    return f" {normalized(spelling)} " in f" {normalized(text)} "


def abstains(answer: str) -> bool:
    return any(contains(answer, phrase) for phrase in ABSTENTIONS)


def is_correct(answer: str, row: dict) -> bool:
    """`answer` to question `row`: an abstention where its answer is absent, else one accepted spelling of every
    answer group."""
    if row["kind"] == "absent":
        return abstains(answer)
    return all(any(contains(answer, spelling) for spelling in group) for group in row["answers"])


def bootstrap(correct: Sequence[bool], rounds: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95 % percentile-bootstrap interval of the share correct (questions resampled with replacement)."""
    if not correct:
        return (float("nan"), float("nan"))
    values = np.asarray(correct, dtype=float)
    means = np.random.default_rng(seed).choice(values, size=(rounds, len(values))).mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))
