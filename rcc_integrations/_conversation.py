"""A conversation as the RCC decoder reads it, whatever framework it came from: long turns become memory,
the rest stays in the chat template."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from rcc_model import CompressedMemory, MemoryWithText

IN_MEMORY = "[The full text of this message is in your memory.]"
CONTINUED = "[The beginning of this message is in your memory.]"
TEMPLATE_RESERVE = 32  # prompt tokens the chat template adds around the messages (a default system prompt...)
TURN_RESERVE = 8  # and around each message
ANSWER_FROM_RESULT = "Answer the user's question with the tool's result, adding nothing else."
_BOUNDARIES = (r"\n\s*\n", r"\n", r"(?<=[.!?])\s+", r"\s+")  # where a message is cut, best first


@dataclass
class DecoderInput:
    """What becomes memory, in order (texts to compress, or ready memories), and the chat left in plain text."""

    pieces: list[str | CompressedMemory | MemoryWithText] = field(default_factory=list)
    chat: list[dict[str, str]] = field(default_factory=list)
    question: str | None = None  # set in instruction-reconstruction mode: compressed, not in `chat`

    def last_user_text(self) -> str:
        """What the reader ranks memory windows against: the latest user turn in plain text."""
        return next((turn["content"] for turn in reversed(self.chat) if turn["role"] == "user"), "")


def plan(turns: Sequence[tuple[str, str]], count_tokens: Callable[[str], int], threshold: int,
         instruction_reconstruction: bool, pieces: Sequence[str | CompressedMemory | MemoryWithText] = (),
         room: int | None = None) -> DecoderInput:
    """(role, text) turns -> DecoderInput. Turns longer than `threshold` tokens become memory (their place in
    the chat says so); the last turn stays plain text, unless `instruction_reconstruction` compresses the
    question too, or the chat would not fit in `room` prompt tokens: then the last turn's beginning becomes
    memory too (`fit_last_turn`). `pieces` (attached documents or memories) are read first."""
    if not turns:
        raise ValueError("the conversation needs at least one message")
    result = DecoderInput(pieces=list(pieces))
    last = len(turns) - 1
    for index, (role, text) in enumerate(turns):
        if index == last and instruction_reconstruction:
            if role != "user":
                raise ValueError("instruction reconstruction needs the last message to be the user's question")
            result.question = text
        elif index != last and count_tokens(text) > threshold:
            result.pieces.append(text)
            result.chat.append({"role": role, "content": IN_MEMORY})
        else:
            result.chat.append({"role": role, "content": text})
    if room is not None and result.question is None:
        fit_last_turn(result, count_tokens, threshold, room)
    return result


def fit_last_turn(conversation: DecoderInput, count_tokens: Callable[[str], int], threshold: int, room: int
                  ) -> None:
    """Where the chat does not fit in `room` prompt tokens, split its last turn (a document, then the question):
    its end stays plain text, at most `threshold` tokens and what fits, cut at a paragraph, line, sentence or
    word; the beginning becomes the last piece of memory, as earlier long turns are. Where not even a short
    end fits, the chat is left as it is (the decoder then says what does not fit)."""
    last = conversation.chat[-1]
    left = room - TEMPLATE_RESERVE - sum(count_tokens(turn["content"]) + TURN_RESERVE for turn in conversation.chat)
    if left >= 0:
        return
    limit = min(threshold, count_tokens(last["content"]) + left - count_tokens(CONTINUED))
    if limit <= 0:
        return
    head, tail = split_tail(last["content"], count_tokens, limit)
    conversation.pieces.append(head)
    last["content"] = f"{CONTINUED}\n\n{tail}"


def split_tail(text: str, count_tokens: Callable[[str], int], limit: int) -> tuple[str, str]:
    """(head, tail) of `text` (trailing whitespace dropped): the longest tail of at most `limit` tokens that
    starts at the best kind of boundary (`_BOUNDARIES`) offering one, else at any character; neither part is
    blank."""
    text = text.rstrip()
    first = len(text) - len(text.lstrip())  # a cut after it leaves a head that is not blank
    for pattern in (*_BOUNDARIES, None):
        cuts = ([cut for cut in (m.end() for m in re.finditer(pattern, text)) if first < cut < len(text)]
                if pattern else range(first + 1, len(text)))
        low, high = 0, len(cuts)  # the first cut whose tail fits: tails shrink as cuts move right
        while low < high:
            middle = (low + high) // 2
            if count_tokens(text[cuts[middle]:]) <= limit:
                high = middle
            else:
                low = middle + 1
        if low < len(cuts):
            return text[:cuts[low]], text[cuts[low]:]
    raise ValueError(f"cannot keep {limit} tokens of a message of {count_tokens(text)} tokens as its end")


def tools_prompt(tools: Sequence[dict[str, Any]]) -> str:
    """A system message describing the tools (OpenAI tool format) and the call format. Each tool reads as a
    signature, `name(argument: type, ...)`, not its JSON schema, whose text a small model copied into its
    arguments ("input.json.json..."); the schema is enforced by constrained decoding anyway."""
    lines = ["You can call these tools. To call one, reply with only a JSON object "
             '{"name": <tool name>, "arguments": <arguments>}.']
    for tool in tools:
        function = tool["function"]
        properties = function.get("parameters", {}).get("properties", {})
        arguments = ", ".join(f"{name}: {spec.get('type', 'value')}" for name, spec in properties.items())
        description = " ".join(function.get("description", "").split())
        lines.append(f"- {function['name']}({arguments}): {description}")
    return "\n".join(lines)


def with_tools(chat: list[dict], tools: Sequence[dict[str, Any]]) -> list[dict]:
    """`chat` with the tools described (`tools_prompt`) at the end of its system message."""
    return with_system_note(chat, tools_prompt(tools))


def answering_from_result(chat: list[dict]) -> list[dict]:
    """`chat`, ending in a tool's result, told to answer from that result (`ANSWER_FROM_RESULT`)."""
    return with_system_note(chat, ANSWER_FROM_RESULT)


def with_system_note(chat: list[dict], text: str) -> list[dict]:
    """`chat` with `text` at the end of its system message (one added in front if it has none)."""
    if chat and chat[0]["role"] == "system":
        return [{"role": "system", "content": f"{chat[0]['content']}\n\n{text}"}, *chat[1:]]
    return [{"role": "system", "content": text}, *chat]
