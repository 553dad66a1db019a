"""Reading part of a memory: compress, select, expand. A question ranks the windows of the memories it is
given by their text; the best few are read EXPANDED (their text enters the prompt as plain tokens, before the
question), a wider neighbourhood (the windows next to them, the next-ranked ones) is read COMPRESSED, as slots,
within a slot budget, and the rest is not read.

Windows are encoded independently, so any subset of a memory's windows is itself a valid memory. Ranking is
lexical (Okapi BM25 over each window's own text), fused with an embedding model's ranking where one is given
(`rcc_model.ranking`): BM25 finds the window holding a fact far more often than the encoder's own states do,
since the question and the fact share their rare words, and the embedding finds it where they do not. A small
decoder reads text better than slots, so the few windows that matter most are worth their tokens.
`reading_for` is the policy that `RCCModel.ask` / `stream`, the CLI, the evaluation protocols and the
integrations share, at the model's slot alignments (`aligned_views`).

Example:
    .. code-block:: python

        memory = model.compress(report)                   # keeps each window's text
        reading = read_within(question, [memory], [memory.window_texts], budget=64, expand_tokens=512)
        prompt = reading.prompt([{"role": "user", "content": question}])   # the expanded text, then the question
        answer = model.generate(reading.memory, prompt, reading=None)
"""

from __future__ import annotations

import dataclasses
import hashlib
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import zip_longest

from rcc_model.memory import CompressedMemory, MemoryViews
from rcc_model.prompts import Prompt, with_context
from rcc_model.ranking import Embed, bm25, rank_windows, words  # noqa: F401 (bm25, words: their old home)


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


@dataclass(frozen=True)
class WindowChoice:
    """One window a question reads: window `window` of memory `memory`, its ranking `score` (None where nothing
    was ranked), and how it is read: "expanded" (its text, as plain prompt tokens) or "compressed" (its slots). A
    window expanded where nothing else is read as slots is read both ways (`read_within`), so listed twice."""

    memory: int
    window: int
    score: float | None
    read: str


@dataclass
class Reading:
    """What a question reads: `memory`, made of the windows `windows[i]` (indices, in order) of the
    `available[i]` that memory i holds, read compressed; `expanded[i]`, the windows of memory i read as text
    instead (`expanded_texts[i]`; all of it, in document order, is `context`, which `prompt` puts before the
    question, `expanded_tokens` tokens). `scores[i]`
    and `expanded_scores[i]` are their ranking scores (empty where nothing was ranked: everything fitted, or
    the memory came without text); `ranking` names the ranking ("bm25", "bm25+embedding", "" for none).
    `texts` is the text of each window of `memory`, in order, when every one came with its text (for
    `aligned_views`), else None."""

    memory: CompressedMemory
    windows: list[list[int]]
    scores: list[list[float]]
    available: list[int]
    texts: list[str] | None = None
    expanded: list[list[int]] = field(default_factory=list)
    expanded_scores: list[list[float]] = field(default_factory=list)
    expanded_texts: list[list[str]] = field(default_factory=list)
    expanded_tokens: int = 0
    ranking: str = ""

    @staticmethod
    def context_of(expanded: Sequence[Sequence[int]], texts: Sequence[Sequence[str]]) -> str:
        """The text of expanded windows (`expanded[i]`, ascending, of memory i, whose texts are `texts[i]`), in
        document order: consecutive windows joined as the text they were cut from, passages apart by a blank
        line."""
        passages: list[str] = []
        for js, text in zip(expanded, texts):
            for k, (j, piece) in enumerate(zip(js, text)):
                if k and js[k - 1] == j - 1:
                    passages[-1] += piece
                else:
                    passages.append(piece)
        return "\n\n".join(p.strip() for p in passages)

    @property
    def context(self) -> str:
        """What the question reads as text: the expanded windows' (`context_of`), "" for none."""
        return self.context_of(self.expanded, self.expanded_texts)

    @property
    def windows_read(self) -> int:
        """Windows read, compressed or expanded (a window read both ways, once)."""
        return sum(len(set(js) | set(shown)) for js, shown in zip_longest(self.windows, self.expanded, fillvalue=[]))

    @property
    def windows_expanded(self) -> int:
        return sum(map(len, self.expanded))

    @property
    def windows_held(self) -> int:
        return sum(self.available)

    @property
    def selected(self) -> bool:
        """Whether some windows were left unread."""
        return self.windows_read < self.windows_held

    @property
    def choices(self) -> list[WindowChoice]:
        """The windows read, expanded ones first (best first), then compressed ones in document order."""
        def ranked(windows: list[list[int]], scores: list[list[float]], read: str) -> list[WindowChoice]:
            return [WindowChoice(i, j, scores[i][k] if i < len(scores) and k < len(scores[i]) else None, read)
                    for i, js in enumerate(windows) for k, j in enumerate(js)]

        expanded = sorted(ranked(self.expanded, self.expanded_scores, "expanded"), key=lambda c: -(c.score or 0.0))
        return expanded + ranked(self.windows, self.scores, "compressed")

    def metadata(self) -> dict:
        """What was read, as JSON-ready response metadata: the ranking, each window's choice, the tokens read
        as text and the slots read compressed."""
        return {"ranking": self.ranking, "windows": [dataclasses.asdict(c) for c in self.choices],
                "expanded_tokens": self.expanded_tokens, "compressed_slots": self.memory.num_slots}

    def prompt(self, prompt: Prompt) -> Prompt:
        """`prompt` with the expanded text before its question (`prompts.with_context`)."""
        return with_context(prompt, self.context)


@dataclass(frozen=True)
class ReadingPolicy:
    """How a question reads a memory (`reading_for`): up to `expand_tokens` tokens of the best-ranked windows
    as text, up to `read_slots` slots of compressed windows, ranked by BM25, fused with `embed`'s ranking where
    given (`rcc_model.ranking`). None = the model's own setting (`RCCConfig.expand_tokens`, `read_slots`).
    `split_questions`: a question that asks several things (`prompts.question_parts`) is read and answered
    part by part (`RCCModel.stream`)."""

    expand_tokens: int | None = None
    read_slots: int | None = None
    embed: Embed | None = None
    split_questions: bool = True

    def __post_init__(self) -> None:
        for name in ("expand_tokens", "read_slots"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 0):
                raise ValueError(f"`{name}` must be a non-negative integer or None, got {value!r}")


def read_within(question: str, memories: Sequence[CompressedMemory], texts: Sequence[Sequence[str] | None],
                budget: int, relevance: float = 0.75, *, expand_tokens: int = 0, embed: Embed | None = None
                ) -> Reading:
    """The part of `memories` (in order) that `question` reads: up to `expand_tokens` tokens as text, and
    within `budget` slots compressed. `texts[i]` is the text of each window of memory i
    (`RCCModel.window_texts`), None where unknown: such a memory cannot be ranked and is read whole.

    The windows with text are ranked against the question (`rank_windows`: BM25, fused with `embed`'s ranking
    where given). With `expand_tokens`, the best windows are expanded, best first, while their tokens fit; the
    slot budget then goes to the windows next to them (so a sentence cut by a window boundary is read on both
    sides), then to the next-ranked windows, then to farther neighbours; a window is read once, except where
    nothing is left to read as slots (a document expanded whole): then the expanded windows are read as slots
    too, within the budget, as the decoder was taught to read text beside slots, never text alone.

    Without expansion (`expand_tokens` 0, or no window fits it), all of the memory is read while it fits;
    otherwise the windows scoring at least `relevance` x the best BM25 score (with `embed`, the best window
    alone) are taken, best first, while they fit (the best always), and what budget is left goes to their
    neighbours, nearest first. Windows that merely share
    the question's common words stay out: the next-best window is often a like fact about another place, which
    misleads the decoder more than it helps when it is read from slots.
    """
    if not memories:
        raise ValueError("read_within needs at least one memory")
    if len(texts) != len(memories):
        raise ValueError(f"got {len(memories)} memories but texts for {len(texts)}")
    counts = [m.num_windows for m in memories]
    for i, (count, text) in enumerate(zip(counts, texts)):
        if text is not None and len(text) != count:
            raise ValueError(f"memory {i} has {count} windows but {len(text)} window texts")
    fits = sum(m.num_slots for m in memories) <= budget
    if (fits and expand_tokens <= 0) or all(text is None for text in texts):  # nothing to rank
        none = [[] for _ in memories]
        return Reading(CompressedMemory.concat(memories), [list(range(n)) for n in counts], none, counts,
                       _texts_read(texts, [range(n) for n in counts]), none, none, none)

    windows = [m.windows() for m in memories]
    left = budget - sum(m.num_slots for m, text in zip(memories, texts) if text is None)
    candidates = [(i, j) for i, text in enumerate(texts) if text is not None for j in range(len(text))]
    ranking, method = rank_windows(question, [texts[i][j] for i, j in candidates], embed)
    scores = dict(zip(candidates, ranking))
    ranked = sorted(candidates, key=lambda c: (-scores[c], c))  # best first; ties in document order
    expanded, room = [], expand_tokens
    for i, j in ranked:
        if scores[(i, j)] > 0 and memories[i].window_tokens[j] <= room:
            expanded.append((i, j))
            room -= memories[i].window_tokens[j]
    chosen: set[tuple[int, int]] = set(expanded)

    def take(window: tuple[int, int]) -> None:
        nonlocal left
        if window in scores and window not in chosen and (windows[window[0]][window[1]].num_slots <= left
                                                          or len(chosen) == 0):
            chosen.add(window)
            left -= windows[window[0]][window[1]].num_slots

    def near(hits: Sequence[tuple[int, int]], distance: int) -> None:
        for i, j in hits:  # the better-ranked side first
            for neighbour in sorted([(i, j - distance), (i, j + distance)], key=lambda c: -scores.get(c, -1.0)):
                take(neighbour)

    if fits:
        for window in candidates:
            take(window)
    elif expanded:
        near(expanded, 1)
        for window in ranked:
            if scores[window] > 0:
                take(window)
    else:  # fused scores are ranks, not strengths: there only the best window (and its ties) passes the cutoff
        best, cutoff = (scores[ranked[0]] if ranked else 0.0), relevance if method == "bm25" else 1.0
        for window in ranked:
            if scores[window] < cutoff * best:
                break
            take(window)
    hits = expanded + [window for window in ranked if window in chosen and window not in expanded]
    for distance in range(1, max(counts) if hits else 0):
        if left <= 0:
            break
        near(hits, distance)
    opened = set(expanded)
    slotted = chosen - opened
    if not slotted and all(text is not None for text in texts):
        # Never text alone: the decoder was taught to read text beside slots (`mixed_reading`); given text alone
        # (a document short enough to be expanded whole) it answers as its untouched base does, at length and
        # often wrongly. So the expanded windows are read as slots too, best first, within the budget.
        for i, j in expanded:
            if windows[i][j].num_slots <= left:
                slotted.add((i, j))
                left -= windows[i][j].num_slots
    picked = [sorted(j for i2, j in slotted if i2 == i) if text is not None else list(range(counts[i]))
              for i, text in enumerate(texts)]
    shown = [sorted(j for i2, j in opened if i2 == i) for i in range(len(memories))]
    parts = [windows[i][j] for i, js in enumerate(picked) for j in js]
    return Reading(CompressedMemory.concat(parts) if parts else _empty_like(memories[0]), picked,
                   [[scores[(i, j)] for j in js] if texts[i] is not None else [] for i, js in enumerate(picked)],
                   counts, _texts_read(texts, picked), shown,
                   [[scores[(i, j)] for j in js] for i, js in enumerate(shown)],
                   [[texts[i][j] for j in js] for i, js in enumerate(shown)], expand_tokens - room, method)


def _empty_like(memory: CompressedMemory) -> CompressedMemory:
    """A memory of no slots from the model that made `memory` (what a question reads when all it reads is
    text)."""
    return dataclasses.replace(memory, states=memory.states[:0], window_tokens=[], token_count=0,
                               source_hash=hashlib.sha256(b"").hexdigest(), extra={}, window_texts=None)


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
                texts: Sequence[str] | None = None, *, expand_tokens: int = 0, embed: Embed | None = None
                ) -> tuple[CompressedMemory | MemoryViews, Reading]:
    """What `model`'s decoder reads to answer `question` from `memory`, and which windows that is
    (`read_within`): up to `expand_tokens` tokens of the best windows as text (`Reading.context`, which
    `Reading.prompt` puts before the question), and the part within `read_slots` slots (all of it with
    `read_slots` None) at the model's slot alignments (`aligned_views`). With neither, all of it as stored.
    `texts` are the windows' texts (default the memory's own, kept by `compress`); a memory without them
    cannot be ranked and is read whole and as stored, with a warning where it holds more than `read_slots`.

    `model.ask`, `model.stream`, `rcc ask`, the demo, the evaluation protocols and the integrations all read a
    memory this way, so a figure measured by a protocol is what a user's question gets.
    """
    texts = memory.window_texts if texts is None else texts
    if texts is None and read_slots is not None and memory.num_slots > read_slots:
        warnings.warn(f"a memory of {memory.num_slots} slots, more than this model reads well ({read_slots}), "
                      "without its text cannot be ranked, so it is read whole: compress it with keep_text=True "
                      "(the default)", stacklevel=2)
    if (read_slots is None and expand_tokens <= 0) or texts is None:
        return memory, read_within(question, [memory], [None], memory.num_slots)
    reading = read_within(question, [memory], [texts], memory.num_slots if read_slots is None else read_slots,
                          expand_tokens=expand_tokens, embed=embed)
    return aligned_views(model, reading.memory, reading.texts), reading
