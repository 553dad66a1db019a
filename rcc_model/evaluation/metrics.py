"""Text metrics: corpus BLEU-4 on the paper's 0-1 scale, sacreBLEU, exact match, token accuracy, token F1,
ROUGE-L. Pure functions over strings and token lists."""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Sequence


def _ngrams(tokens: Sequence, n: int) -> Counter:
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def corpus_bleu4(hypotheses: Sequence[Sequence], references: Sequence[Sequence]) -> float:
    """NLTK-style corpus BLEU-4 (uniform weights, one reference each, no smoothing), in [0, 1]."""
    matches, totals = [0] * 4, [0] * 4
    hyp_len = ref_len = 0
    for hyp, ref in zip(hypotheses, references, strict=True):
        hyp_len, ref_len = hyp_len + len(hyp), ref_len + len(ref)
        for n in range(1, 5):
            hyp_grams, ref_grams = _ngrams(hyp, n), _ngrams(ref, n)
            matches[n - 1] += sum(min(c, ref_grams[g]) for g, c in hyp_grams.items())
            totals[n - 1] += max(0, len(hyp) - n + 1)
    if hyp_len == 0 or min(matches) == 0:
        return 0.0
    log_precision = sum(math.log(m / t) for m, t in zip(matches, totals)) / 4
    brevity = 1.0 if hyp_len > ref_len else math.exp(1 - ref_len / hyp_len)
    return brevity * math.exp(log_precision)


def sacrebleu_score(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """sacreBLEU (13a tokenisation, corpus level), on its 0-100 scale."""
    import sacrebleu

    return sacrebleu.corpus_bleu(list(hypotheses), [list(references)], tokenize="13a").score


def token_accuracy(generated: Sequence[int], reference: Sequence[int]) -> float:
    """Share of reference positions where the free-running generation has the same token."""
    if not reference:
        return 1.0 if not generated else 0.0
    return sum(g == r for g, r in zip(generated, reference)) / len(reference)


def digits_in_place(found: str, expected: str) -> float:
    """Share of `expected`'s characters that `found` has at the same place (a 5-digit code half recalled
    scores 0.4 or 0.6); 0 for an answer of another length."""
    if len(found) != len(expected) or not expected:
        return 0.0
    return sum(a == b for a, b in zip(found, expected)) / len(expected)


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower case, no punctuation, no articles, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def exact_match(prediction: str, reference: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(reference))


def token_f1(prediction: str, reference: str) -> float:
    pred, ref = normalize_answer(prediction).split(), normalize_answer(reference).split()
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F-measure over normalised words (longest common subsequence)."""
    pred, ref = normalize_answer(prediction).split(), normalize_answer(reference).split()
    if not pred or not ref:
        return float(pred == ref)
    previous = [0] * (len(ref) + 1)
    for p in pred:
        current = [0]
        for j, r in enumerate(ref):
            current.append(previous[j] + 1 if p == r else max(previous[j + 1], current[j]))
        previous = current
    lcs = previous[-1]
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(pred), lcs / len(ref)
    return 2 * precision * recall / (precision + recall)
