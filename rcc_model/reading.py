"""Reading part of a memory: when documents hold more memory than a model reads well, a question reads the
windows whose text matches it best, in document order, within a budget of slots.

Windows are encoded independently, so any subset of a memory's windows is itself a valid memory. Ranking is
lexical (Okapi BM25 over each window's own text): it finds the window holding a fact far more often than the
encoder's own states do, since the question and the fact share their rare words. `reading_for` is the policy
the CLI, the evaluation protocols and the integrations share: the part within a slot budget, read at the model's
slot alignments (`aligned_views`).

Example:
    .. code-block:: python

        memory = model.compress(report)
        reading = read_within(question, [memory], [model.window_texts(report)], budget=256)
        answer = model.generate(reading.memory, [{"role": "user", "content": question}])
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from rcc_model.memory import CompressedMemory, MemoryViews

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


@dataclass(frozen=True)
class MemoryWithText:
    """A memory with the text of each of its windows (`RCCModel.window_texts`), which a reader can rank
    (`read_within`) and read again at other slot alignments (`aligned_views`) as it would a text it
    compressed itself: what an index passes for the stored memory of its documents. A memory compressed with
    `keep_text=True` carries the same texts itself (`CompressedMemory.window_texts`)."""

    memory: CompressedMemory
    texts: list[str]

    def __post_init__(self) -> None:
        if len(self.texts) != self.memory.num_windows:
            raise ValueError(f"a memory of {self.memory.num_windows} windows given {len(self.texts)} window texts")

    @property
    def num_slots(self) -> int:
        return self.memory.num_slots


@dataclass
class Reading:
    """What a question reads: `memory`, made of the windows `windows[i]` (indices, in order) of the
    `available[i]` that memory i holds; `scores[i]` are their BM25 scores (empty where nothing was ranked:
    everything fitted, or the memory came without text). `texts` is the text of each window read, in
    order, when every one came with its text (for `aligned_views`), else None."""

    memory: CompressedMemory
    windows: list[list[int]]
    scores: list[list[float]]
    available: list[int]
    texts: list[str] | None = None

    @property
    def windows_read(self) -> int:
        return sum(map(len, self.windows))

    @property
    def windows_held(self) -> int:
        return sum(self.available)

    @property
    def selected(self) -> bool:
        """Whether some windows were left unread."""
        return self.windows_read < self.windows_held


def read_within(question: str, memories: Sequence[CompressedMemory], texts: Sequence[Sequence[str] | None],
                budget: int, relevance: float = 0.75) -> Reading:
    """The part of `memories` (in order) that `question` reads within `budget` slots.

    All of it while it fits. Otherwise a memory without text (`texts[i]` None) cannot be ranked and is read
    whole; the windows of the others are ranked by BM25 against the question, and those scoring at least
    `relevance` x the best are taken, best first, while they fit (the best always); what budget is left goes
    to their neighbours, nearest first, so that a sentence cut by a window boundary is read on both sides.
    Windows that merely share the question's common words stay out: the next-best window is often a like fact
    about another place, which misleads the decoder more than it helps. `texts[i]` is the text of each window
    of memory i (`RCCModel.window_texts`).
    """
    if not memories:
        raise ValueError("read_within needs at least one memory")
    if len(texts) != len(memories):
        raise ValueError(f"got {len(memories)} memories but texts for {len(texts)}")
    counts = [m.num_windows for m in memories]
    for i, (count, text) in enumerate(zip(counts, texts)):
        if text is not None and len(text) != count:
            raise ValueError(f"memory {i} has {count} windows but {len(text)} window texts")
    if sum(m.num_slots for m in memories) <= budget or all(text is None for text in texts):  # nothing to rank
        return Reading(CompressedMemory.concat(memories), [list(range(n)) for n in counts], [[] for _ in memories],
                       counts, _texts_read(texts, [range(n) for n in counts]))

    windows = [m.windows() for m in memories]
    left = budget - sum(m.num_slots for m, text in zip(memories, texts) if text is None)
    candidates = [(i, j) for i, text in enumerate(texts) if text is not None for j in range(len(text))]
    scores = dict(zip(candidates, bm25(question, [texts[i][j] for i, j in candidates])))
    chosen: set[tuple[int, int]] = set()

    def take(window: tuple[int, int]) -> None:
        nonlocal left
        if window in scores and window not in chosen and (windows[window[0]][window[1]].num_slots <= left
                                                          or not chosen):
            chosen.add(window)
            left -= windows[window[0]][window[1]].num_slots

    ranked = sorted(candidates, key=lambda c: (-scores[c], c))  # best first; ties in document order
    best = scores[ranked[0]] if ranked else 0.0
    for window in ranked:
        if scores[window] < relevance * best:
            break
        take(window)
    hits = [window for window in ranked if window in chosen]  # their neighbours in the same order
    for distance in range(1, max(counts) if hits else 0):
        if left <= 0:
            break
        for i, j in hits:
            for neighbour in sorted([(i, j - distance), (i, j + distance)], key=lambda c: -scores.get(c, -1.0)):
                take(neighbour)
    picked = [sorted(j for i2, j in chosen if i2 == i) if text is not None else list(range(counts[i]))
              for i, text in enumerate(texts)]
    parts = [windows[i][j] for i, js in enumerate(picked) for j in js]
    return Reading(CompressedMemory.concat(parts), picked,
                   [[scores[(i, j)] for j in js] if texts[i] is not None else [] for i, js in enumerate(picked)],
                   counts, _texts_read(texts, picked))


def _texts_read(texts: Sequence[Sequence[str] | None], picked: Sequence[Sequence[int]]) -> list[str] | None:
    if any(text is None and len(js) for text, js in zip(texts, picked)):
        return None
    return [texts[i][j] for i, js in enumerate(picked) for j in js]


def aligned_views(model, memory: CompressedMemory, texts: Sequence[str] | None, alignments: int | None = None
                  ) -> CompressedMemory | MemoryViews:
    """`memory` with the text it holds compressed again by `model` at other slot alignments, to be read as one
    (`MemoryViews`): view i moves every slot boundary by i x r / `alignments` tokens (default the model's
    `read_alignments`; 1 returns `memory`). `texts` are the texts `memory` was compressed from, in order, one
    per window or per document (`window_texts`, `Reading.texts`); without them (None or empty) `memory` is read
    as it is.

    Why: a slot holds r tokens in one state and blurs their order, which prose forgives and codes do not;
    another alignment puts the same tokens in other slots, and the views disagree where one is unsure
    (`MemoryViews`). Each alignment costs one encoder pass over `texts` and one more decoder row per answer.
    """
    alignments = model.config.read_alignments if alignments is None else alignments
    if alignments < 1 or alignments > memory.rate:
        raise ValueError(f"`alignments` must be from 1 to the rate ({memory.rate}), got {alignments}")
    if alignments == 1 or not texts:
        return memory
    views = [memory] + [CompressedMemory.concat(model.compress(list(texts), rate=memory.rate,
                                                               offset=i * memory.rate // alignments))
                        for i in range(1, alignments)]
    return MemoryViews(tuple(views))


def reading_for(model, memory: CompressedMemory, question: str, read_slots: int | None,
                texts: Sequence[str] | None = None) -> tuple[CompressedMemory | MemoryViews, Reading]:
    """What `model`'s decoder reads to answer `question` from `memory`, and which windows that is: the part
    within `read_slots` slots (`read_within`: beyond the budget, the windows whose text best matches the
    question) at the model's slot alignments (`aligned_views`), or, with `read_slots` None, all of it as
    stored. `texts` are the windows' texts (default the memory's own, `compress(..., keep_text=True)`); a
    memory without them is read whole and as stored.

    `rcc ask`, the demo, the evaluation protocols and the integrations all read a memory this way, so a figure
    measured by a protocol is what a user's question gets.
    """
    if read_slots is None:
        return memory, read_within(question, [memory], [None], memory.num_slots)
    reading = read_within(question, [memory], [memory.window_texts if texts is None else texts], read_slots)
    return aligned_views(model, reading.memory, reading.texts), reading
