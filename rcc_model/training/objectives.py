"""Training objectives as example builders: each turns a random draw into `Example`s.

An example is what the decoder should learn to produce from memory: `context` is compressed (one window, or
several for long-context training), the decoder reads `[slots + prompt + target]`, and the loss is on
`target`. Builders are deterministic functions of their `random.Random`, so a run resumes exactly.

Builders over the token stream take `aligned`: draw contexts only from the first `aligned` windows of the
stream, starting on window boundaries, and record where (`context_start`), so that their slot states can come
from a `SlotCache` instead of the encoder.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from rcc_model.data.qa import NOT_IN_DOCUMENT, QAExample
from rcc_model.prompts import instruction_frame, prompt_ids, text_then_question
from rcc_model.reading import Reading


@dataclass(frozen=True)
class Example:
    context: list[int]
    prompt: list[int]
    target: list[int]
    context_start: int | None = None  # offset of an aligned context in the token stream


Builder = Callable[[random.Random], Example]


def _window(tokens: np.ndarray, rng: random.Random, length: int, window: int, aligned: int | None,
            windows: int = 1) -> tuple[list[int], int | None]:
    """`length` tokens from a random start, or (with `aligned`) from a window boundary such that the first
    `windows` windows drawn (the context) are among the first `aligned` windows of the stream; and that start."""
    if aligned is None:
        start = rng.randrange(0, len(tokens) - length)
        return tokens[start:start + length].tolist(), None
    last = min(aligned - windows, (len(tokens) - length) // window)
    if last < 0:
        raise ValueError(f"{aligned} cached windows cannot hold a context of {windows} windows")
    start = rng.randrange(0, last + 1) * window
    return tokens[start:start + length].tolist(), start


def reconstruction(tokens: np.ndarray, window: int, span: int, cue: int, whole_window_share: float = 0.5,
                   aligned: int | None = None) -> Builder:
    """Compress one window; regenerate it. A `whole_window_share` of the examples regenerate the whole window
    with no cue (what `RCCModel.reconstruct` and the reconstruction evaluation ask for); the others regenerate
    a `span` starting anywhere, after `cue` unsupervised tokens that tell the decoder where to start (the
    paper's random-span cue)."""

    def build(rng: random.Random) -> Example:
        context, at = _window(tokens, rng, window, window, aligned)
        if rng.random() < whole_window_share:
            return Example(context, [], context, at)
        length = min(span, window)
        start = rng.randrange(0, window - length + 1)
        piece = context[start:start + length]
        return Example(context, piece[:cue], piece[cue:], at)

    return build


def continuation(tokens: np.ndarray, window: int, span: int, aligned: int | None = None) -> Builder:
    """Compress one window; continue the text after it."""

    def build(rng: random.Random) -> Example:
        text, at = _window(tokens, rng, window + span, window, aligned)
        return Example(text[:window], [], text[window:], at)

    return build


def numbers(tokens: np.ndarray, tokenizer, window: int, per_window: tuple[int, int] = (2, 6),
            digits: tuple[int, int] = (3, 8)) -> Builder:
    """Compress one window of real text with random numbers written into it at random places; regenerate
    the whole window.

    Why: a model that reads the window holding a code can still swap two neighbouring digits (27611 -> 27166),
    the order of tokens inside one slot. Prose
    rarely depends on that order and numbers always do, and real text holds few of them; here the digits
    fall at every offset of a slot."""

    def encode(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    def build(rng: random.Random) -> Example:
        text, _ = _window(tokens, rng, window, window, None)
        for _ in range(rng.randint(*per_window)):
            length = rng.randint(*digits)
            value = rng.randint(10 ** (length - 1), 10**length - 1)
            at = rng.randrange(len(text) + 1)
            text[at:at] = encode(f" {value}")
        text = text[:window]
        return Example(text, [], text)

    return build


def long_context(tokens: np.ndarray, window: int, windows: int, span: int, cue: int,
                 aligned: int | None = None) -> Builder:
    """Compress several windows; regenerate a span of one of them (the decoder must find it)."""

    def build(rng: random.Random) -> Example:
        context, at = _window(tokens, rng, window * windows, window, aligned, windows)
        start = rng.randrange(0, len(context) - span + 1)
        piece = context[start:start + span]
        return Example(context, piece[:cue], piece[cue:], at)

    return build


def question_answering(examples: Sequence[QAExample], tokenizer, window: int, windows: int,
                       reconstruct_instruction: float, haystack: np.ndarray | None = None,
                       haystack_share: float = 0.0, kinds: dict[str, float] | None = None, *,
                       answer_end: int) -> Builder:
    """Answer generated questions from memory, in both prompt modes of the paper: the question in plain text
    through the chat template, or (with probability `reconstruct_instruction`) compressed after the context,
    with the decoder regenerating it before answering.

    The generated documents are mostly one window long; with probability `haystack_share` the document is
    hidden at a random depth inside real text from the `haystack` token stream, grown to a random length of
    up to `windows` windows, so the answer must be found among many slots (the needle setting).

    `kinds` weights the examples' kinds (e.g. more "fact" than "definition"); None draws every example with
    the same chance, as the generated set mixes them. `answer_end` follows every answer: the token generation
    stops at (`generation.answer_end_id`), which a tokenizer's own EOS need not be."""
    draw = _weighted_draw(examples, kinds)
    frame = instruction_frame(tokenizer)
    header = prompt_ids(tokenizer, frame.header)
    budget = window * windows

    def encode(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    def document(qa: QAExample, room: int, rng: random.Random) -> list[int]:
        ids = encode(qa.context)[:room]
        if haystack is None or not haystack_share or len(ids) >= room or rng.random() >= haystack_share:
            return ids
        extra = rng.randint(0, room - len(ids))
        start = rng.randrange(0, len(haystack) - extra)
        filler = haystack[start:start + extra].tolist()
        cut = rng.randint(0, extra)
        return filler[:cut] + ids + filler[cut:]

    def build(rng: random.Random) -> Example:
        qa = draw(rng)
        answer = [*encode(qa.answer), answer_end]
        if rng.random() < reconstruct_instruction:
            question = encode("\n\n" + qa.question)
            context = document(qa, budget - len(question), rng) + question
            return Example(context, header, encode(qa.question + frame.turn_end) + answer)
        return Example(document(qa, budget, rng), prompt_ids(tokenizer, [{"role": "user", "content": qa.question}]),
                       answer)

    return build


MIXED_CASES = ("expanded", "compressed", "absent")


def mixed_reading(examples: Sequence[QAExample], tokenizer, haystack: np.ndarray, window: int,
                  cases: dict[str, float], expanded_windows: int, compressed_windows: int,
                  kinds: dict[str, float] | None = None, *, answer_end: int) -> Builder:
    """Answer from what a selective reading gives the decoder (`rcc_model.reading`): the text of a few windows
    before the question, and a few others as slots.

    A generated document is hidden at a random depth in real text from `haystack`, cut into windows; up to
    `expanded_windows` of them are read as text, in document order, joined as `Reading.context_of` joins them,
    and up to `compressed_windows` others as slots. `cases` weights where the window that states the answer
    goes: "expanded" (read as text), "compressed" (read as slots while other windows are the text) or "absent"
    (read neither way: the answer is "The document does not say."). Questions whose answer the document never
    gives ("not-in-document") are answered so whatever is read. The other windows are the document's other
    facts and the real text around it: the distractors a ranking brings."""
    unknown = sorted(set(cases) - set(MIXED_CASES))
    if unknown:
        raise ValueError(f"unknown mixed-reading cases {unknown}; known: {list(MIXED_CASES)}")
    draw, choose_case = _weighted_draw(examples, kinds), _weighted_choice(cases)

    def encode(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    def windows_of(qa: QAExample, read: int, rng: random.Random) -> list[list[int]]:
        """The document in real text, padded to whole windows, with at least `read` windows of text around it."""
        ids = encode(qa.context)
        extra = (-(-len(ids) // window) + read) * window - len(ids)
        start = rng.randrange(0, len(haystack) - extra)
        filler = haystack[start:start + extra].tolist()
        cut = rng.randint(0, extra)
        tokens = filler[:cut] + ids + filler[cut:]
        return [tokens[i:i + window] for i in range(0, len(tokens), window)]

    def build(rng: random.Random) -> Example:
        n_expanded, n_compressed = rng.randint(1, expanded_windows), rng.randint(1, compressed_windows)
        while True:
            qa = draw(rng)
            windows = windows_of(qa, n_expanded + n_compressed, rng)
            texts = [tokenizer.decode(w) for w in windows]
            answered = qa.answer != NOT_IN_DOCUMENT
            holding = [j for j, text in enumerate(texts) if answered and qa.answer in text]
            if holding or not answered:  # else the answer straddles two windows: draw again
                break
        case = choose_case(rng) if answered else "absent"
        others = [j for j in range(len(windows)) if j not in holding]
        rng.shuffle(others)
        fact = [rng.choice(holding)] if case != "absent" else []
        if case == "expanded":
            expanded, compressed = fact + others[:n_expanded - 1], others[n_expanded - 1:][:n_compressed]
        elif case == "compressed":
            expanded, compressed = others[:n_expanded], fact + others[n_expanded:][:n_compressed - 1]
        else:
            expanded, compressed = others[:n_expanded], others[n_expanded:][:n_compressed]
        expanded, compressed = sorted(expanded), sorted(compressed)
        text = Reading.context_of([expanded], [[texts[j] for j in expanded]])
        question = [{"role": "user", "content": text_then_question(text, qa.question)}]
        answer = qa.answer if case != "absent" else NOT_IN_DOCUMENT
        return Example([t for j in compressed for t in windows[j]], prompt_ids(tokenizer, question),
                       [*encode(answer), answer_end])

    return build


def _weighted_draw(examples: Sequence[QAExample], kinds: dict[str, float] | None
                   ) -> Callable[[random.Random], QAExample]:
    if kinds is None:
        return lambda rng: examples[rng.randrange(len(examples))]
    by_kind: dict[str, list[QAExample]] = {}
    for qa in examples:
        by_kind.setdefault(qa.kind, []).append(qa)
    unknown = sorted(set(kinds) - set(by_kind))
    if unknown:
        raise ValueError(f"no qa examples of kinds {unknown}; the set has {sorted(by_kind)}")
    choose = _weighted_choice(kinds)

    def draw(rng: random.Random) -> QAExample:
        pool = by_kind[choose(rng)]
        return pool[rng.randrange(len(pool))]

    return draw


def _weighted_choice(weights: dict[str, float]) -> Callable[[random.Random], str]:
    """A draw of one name with probability proportional to its weight (one `rng.random()` per draw)."""
    names = sorted(n for n in weights if weights[n] > 0)
    if not names:
        raise ValueError(f"weights {weights} select nothing")
    cumulative = np.cumsum([weights[n] for n in names]) / sum(weights[n] for n in names)
    return lambda rng: names[int(np.searchsorted(cumulative, rng.random(), side="right"))]


def mixture(builders: dict[str, Builder], weights: dict[str, float]) -> Builder:
    missing = [n for n in weights if weights[n] > 0 and n not in builders]
    if missing:
        raise ValueError(f"unknown objectives {sorted(missing)}; known: {sorted(builders)}")
    choose = _weighted_choice(weights)
    return lambda rng: builders[choose(rng)](rng)
