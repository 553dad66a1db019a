"""Ranking the windows of a memory against a question: Okapi BM25 over each window's text, fused by reciprocal
rank with an embedding ranking where the caller has an embedding model.

BM25 finds the window holding a fact when the question shares its rare words; a paraphrased question does not,
and an embedding model ranks by meaning instead. Reciprocal-rank fusion (Cormack et al., 2009) adds
1 / (k + rank) over both rankings, so neither scale dominates and a window either ranks first comes near the
top. `embed` is any callable from texts to vectors (the integrations adapt LlamaIndex and LangChain embedding
models to it), so this module depends on no framework.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Sequence

Embed = Callable[[Sequence[str]], Sequence[Sequence[float]]]
"""Texts -> one vector each (e.g. a sentence-embedding model's mean-pooled states)."""

RRF_K = 60  # reciprocal-rank fusion's constant (Cormack et al.): damps the weight of the very top ranks
TIE_BREAK = 1e-9  # x cosine: orders windows of equal fused score by the embedding, and nothing else

_WORD = re.compile(r"\w+")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def bm25(query: str, texts: Sequence[str], k1: float = 1.2, b: float = 0.75) -> list[float]:
    """Okapi BM25 score of each text for `query`, with document frequencies taken over `texts` themselves."""
    bags = [Counter(words(t)) for t in texts]
    if not bags:
        return []
    lengths = [sum(bag.values()) for bag in bags]
    average = max(sum(lengths) / len(bags), 1.0)
    frequency = Counter(term for bag in bags for term in bag)
    terms = set(words(query))
    idf = {t: math.log(1 + (len(bags) - frequency[t] + 0.5) / (frequency[t] + 0.5)) for t in terms}
    return [
        sum(idf[t] * bag[t] * (k1 + 1) / (bag[t] + k1 * (1 - b + b * n / average)) for t in terms if t in bag)
        for bag, n in zip(bags, lengths)
    ]


def cosine_scores(query: str, texts: Sequence[str], embed: Embed) -> list[float]:
    """Cosine similarity of each text's embedding to the query's (one `embed` call for all of them)."""
    vectors = [list(map(float, v)) for v in embed([query, *texts])]
    if len(vectors) != len(texts) + 1:
        raise ValueError(f"the embedding model returned {len(vectors)} vectors for {len(texts) + 1} texts")
    norms = [math.sqrt(sum(x * x for x in v)) or 1.0 for v in vectors]
    return [sum(a * b for a, b in zip(vectors[0], v)) / (norms[0] * n) for v, n in zip(vectors[1:], norms[1:])]


def reciprocal_rank_fusion(rankings: Sequence[Sequence[float]], k: int = RRF_K) -> list[float]:
    """Sum over `rankings` (scores of the same items, higher is better) of 1 / (k + rank), rank 1 the best;
    tied scores share the better rank."""
    fused = [0.0] * (len(rankings[0]) if rankings else 0)
    for scores in rankings:
        first: dict[float, int] = {}
        for rank, score in enumerate(sorted(scores, reverse=True), start=1):
            first.setdefault(score, rank)
        for i, score in enumerate(scores):
            fused[i] += 1.0 / (k + first[score])
    return fused


def rank_windows(question: str, texts: Sequence[str], embed: Embed | None = None) -> tuple[list[float], str]:
    """(a score per text, higher = more relevant to `question`; the ranking's name). BM25 alone without
    `embed` ("bm25"); with it, BM25 fused with the embedding ranking by reciprocal rank ("bm25+embedding"),
    texts sharing no word with the question tied last in BM25's, and a tie (first in one ranking and second in
    the other against the reverse, say) broken by the embedding: the ranking added to find what words miss."""
    lexical = bm25(question, texts)
    if embed is None or not texts:
        return lexical, "bm25"
    semantic = cosine_scores(question, texts, embed)
    fused = reciprocal_rank_fusion([lexical, semantic])
    return [score + TIE_BREAK * similarity for score, similarity in zip(fused, semantic)], "bm25+embedding"
