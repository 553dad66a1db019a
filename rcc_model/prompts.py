"""Prompts for the decoder: raw text, chat messages through the base model's template, and the
instruction-reconstruction header."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Integral

Prompt = str | Sequence[int] | Sequence[dict] | None

_SENTINEL = "\x00RCC-INSTRUCTION\x00"


@dataclass(frozen=True)
class InstructionFrame:
    """The chat template split around the user's instruction.

    In instruction-reconstruction mode the decoder gets only `header` and first regenerates the
    instruction it read from memory, then `turn_end` (end of the user turn + assistant header), then the
    answer.
    """

    header: str
    turn_end: str


def question_of(prompt: str | Sequence[dict]) -> str:
    """The question a prompt asks: a string itself, or the content of chat messages' last turn, a user's
    (what a reader ranks windows against)."""
    if isinstance(prompt, str):
        return prompt
    if prompt and isinstance(prompt[-1], dict) and prompt[-1].get("role") == "user":
        return prompt[-1]["content"]
    raise ValueError("a question is a string or chat messages ending in a user turn")


# Where a question asks a second thing: ", and" before a question word ("What is X, and who is Y?").
_NEXT_PART = re.compile(r",\s+and\s+(?=(?:what|who|whom|whose|which|when|where|why|how|within|on what|in which|"
                        r"to which|at what|for how)\b)", re.IGNORECASE)


def question_parts(question: str) -> list[str]:
    """The questions a many-part question asks, in order ("What is X, and who is Y?" -> ["What is X?",
    "Who is Y?"]); `[question]` where it asks one thing, or spans lines (a text with its question).

    The decoder answers one part of a two-part question, and the windows best for the whole are seldom those
    of each part, so each part is read and answered on its own (`RCCModel.stream`, the integrations): measured
    in benchmarks/two_windows."""
    if "\n" in question.strip():
        return [question]
    pieces = [p.strip() for p in _NEXT_PART.split(question.strip())]
    if len(pieces) == 1 or not all(pieces):
        return [question]
    return [(p[0].upper() + p[1:]).rstrip(" ?") + "?" for p in pieces]


def with_question(prompt: str | Sequence[dict], question: str) -> str | list[dict]:
    """`prompt` asking `question` instead: a string replaced, or chat messages' last user turn."""
    question_of(prompt)  # refuses a prompt that asks nothing
    if isinstance(prompt, str):
        return question
    return [*prompt[:-1], {**prompt[-1], "content": question}]


def text_then_question(text: str, question: str) -> str:
    """A question about a text, as the base model reads it in its user turn: the text, a blank line, the
    question. The full-text baseline and answers from the reconstruction share it, so that they differ only in
    the text read."""
    return f"{text}\n\n{question}"


def token_ids(items: Sequence, vocab_size: int, what: str) -> list[int]:
    """`items` as token ids, refused unless each is an integer (not a bool) in [0, `vocab_size`): a bad id is a
    clear error here, not an IndexError from inside the embedding."""
    if isinstance(items, (bytes, bytearray)):
        raise TypeError(f"{what} got bytes: decode them to text first (e.g. data.decode('utf-8'))")
    ids = list(items)
    wrong = next((t for t in ids if isinstance(t, bool) or not isinstance(t, Integral)), None)
    if wrong is not None:
        raise TypeError(f"{what}: token ids are ints, got {wrong!r} ({type(wrong).__name__})")
    ids = [int(t) for t in ids]
    if ids and (min(ids) < 0 or max(ids) >= vocab_size):
        bad = next(t for t in ids if not 0 <= t < vocab_size)
        raise ValueError(f"{what}: token id {bad} is outside the vocabulary of {vocab_size} tokens (ids 0 to "
                         f"{vocab_size - 1}); encode text with this model's tokenizer")
    return ids


def with_context(prompt: Prompt, context: str) -> Prompt:
    """`prompt` with `context` (text the decoder reads as plain tokens) before its question: a string becomes
    `text_then_question(context, prompt)`, chat messages get it in their last user turn, and "" changes nothing.
    Where a reader puts the windows it expands (`rcc_model.reading`)."""
    if not context:
        return prompt
    if isinstance(prompt, str):
        return text_then_question(context, prompt)
    messages = list(prompt or [])
    for k in range(len(messages) - 1, -1, -1):
        if isinstance(messages[k], dict) and messages[k].get("role") == "user":
            messages[k] = {**messages[k], "content": text_then_question(context, messages[k]["content"])}
            return messages
    raise ValueError("expanded text goes before a question: pass a string or chat messages with a user turn")


def prompt_ids(tokenizer, prompt: Prompt) -> list[int]:
    """Token ids of a prompt: None/"" -> [], str -> raw text, list of ints -> as is, messages -> template.
    An empty list is refused: it is neither a conversation nor a prompt (None is "no prompt")."""
    if prompt is None or prompt == "":
        return []
    if isinstance(prompt, str):
        _need(tokenizer, "a text prompt")
        return tokenizer(prompt, add_special_tokens=False)["input_ids"]
    if isinstance(prompt, (bytes, bytearray)):
        raise TypeError("a prompt got bytes: decode them to text first (e.g. data.decode('utf-8'))")
    items = list(prompt)
    if not items:
        raise ValueError("the prompt is an empty list: pass messages, token ids, a string, or None to continue "
                         "from memory alone")
    if all(isinstance(t, int) and not isinstance(t, bool) for t in items):
        return items
    if all(isinstance(m, dict) and "role" in m for m in items):
        _need(tokenizer, "chat messages")
        ids = tokenizer.apply_chat_template(items, add_generation_prompt=True, tokenize=True)
        return list(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids)
    raise TypeError("a prompt is a string, a list of token ids, or a list of {'role', 'content'} messages")


def instruction_frame(tokenizer) -> InstructionFrame:
    _need(tokenizer, "instruction reconstruction")
    if getattr(tokenizer, "chat_template", None) is None:
        raise ValueError("instruction reconstruction needs a tokenizer with a chat template")
    text = tokenizer.apply_chat_template([{"role": "user", "content": _SENTINEL}], tokenize=False,
                                         add_generation_prompt=True)
    header, _, turn_end = text.partition(_SENTINEL)
    return InstructionFrame(header=header, turn_end=turn_end)


def _need(tokenizer, what: str) -> None:
    if tokenizer is None:
        raise ValueError(f"{what} needs a tokenizer, and this model has none: pass token ids")
