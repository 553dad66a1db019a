"""A conversation as the RCC decoder reads it, whatever framework it came from: long turns become memory,
the rest stays in the chat template."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from rcc_model import CompressedMemory, MemoryWithText

IN_MEMORY = "[The full text of this message is in your memory.]"


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
         instruction_reconstruction: bool, pieces: Sequence[str | CompressedMemory | MemoryWithText] = ()
         ) -> DecoderInput:
    """(role, text) turns -> DecoderInput. Turns longer than `threshold` tokens become memory (their place in
    the chat says so); the last turn stays plain text, unless `instruction_reconstruction` compresses the
    question too. `pieces` (attached documents or memories) are read first."""
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
    return result


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
    """`chat` with the tools described (`tools_prompt`) at the end of its system message (one added in
    front if it has none)."""
    text = tools_prompt(tools)
    if chat and chat[0]["role"] == "system":
        return [{"role": "system", "content": f"{chat[0]['content']}\n\n{text}"}, *chat[1:]]
    return [{"role": "system", "content": text}, *chat]
