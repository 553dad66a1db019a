"""LangChain messages -> what the RCC decoder reads: compressed texts and chat-template messages."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from langchain_core.documents import Document
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage

from rcc_integrations._conversation import DecoderInput, plan
from rcc_model import CompressedMemory, MemoryWithText

_TOOL_CALL_BLOCKS = {"tool_use", "tool_call", "tool_call_chunk"}
_ROLES = {SystemMessage: "system", HumanMessage: "user", AIMessage: "assistant", ToolMessage: "tool"}


def message_text(message: BaseMessage) -> str:
    """The text of a message; non-text content blocks are an error, never silently dropped."""
    if isinstance(message.content, str):
        return message.content
    parts = []
    for block in message.content:
        if isinstance(block, str):
            parts.append(block)
        elif isinstance(block, dict) and block.get("type") == "text":
            parts.append(block.get("text", ""))
        elif isinstance(block, dict) and block.get("type") in _TOOL_CALL_BLOCKS:
            continue  # the call itself is in `message.tool_calls`, rendered by `rendered_text`
        else:
            kind = block.get("type") if isinstance(block, dict) else type(block).__name__
            raise ValueError(f"RCCChatModel reads text only; got a {kind!r} content block")
    return "".join(parts)


def rendered_text(message: BaseMessage) -> str:
    """The text the decoder sees for a message: an assistant's tool calls are written out as the JSON it
    produces them in, so a conversation with tool results reads like the calls that led to them."""
    text = message_text(message)
    if isinstance(message, AIMessage) and message.tool_calls:
        calls = [json.dumps({"name": c["name"], "arguments": c["args"]}) for c in message.tool_calls]
        text = "\n".join([text, *calls]) if text else "\n".join(calls)
    return text


def role_of(message: BaseMessage) -> str:
    for cls, role in _ROLES.items():
        if isinstance(message, cls):
            return role
    raise ValueError(f"unsupported message type {type(message).__name__}")


def split_messages(messages: Sequence[BaseMessage], count_tokens, threshold: int,
                   instruction_reconstruction: bool, attached: Any = None, room: int | None = None
                   ) -> DecoderInput:
    """LangChain messages (and attached memory) -> what the decoder reads; see `_conversation.plan`."""
    if not messages:
        raise ValueError("RCCChatModel needs at least one message")
    turns = [(role_of(m), rendered_text(m)) for m in messages]
    return plan(turns, count_tokens, threshold, instruction_reconstruction, attached_pieces(attached), room)


def attached_pieces(memory: Any) -> list[str | CompressedMemory | MemoryWithText]:
    """Explicitly attached memory: CompressedMemory objects (or MemoryWithText), .rccmem files, Documents or
    strings."""
    if memory is None:
        return []
    pieces: list[str | CompressedMemory | MemoryWithText] = []
    for item in memory if isinstance(memory, (list, tuple)) else [memory]:
        if isinstance(item, (CompressedMemory, MemoryWithText)):
            pieces.append(item)
        elif isinstance(item, Path) or (isinstance(item, str) and item.endswith(".rccmem")):
            pieces.append(CompressedMemory.load(item))
        elif isinstance(item, Document):
            pieces.append(item.page_content)
        elif isinstance(item, str):
            pieces.append(item)
        else:
            raise TypeError(f"cannot use {type(item).__name__} as memory: pass CompressedMemory, "
                            "MemoryWithText, a .rccmem path, a Document or a string")
    return pieces


def memory_key(memory: Any) -> list[str] | None:
    """What identifies attached memory in a response-cache key (`_identifying_params`): a hash of each text,
    the source hash of each memory, each path."""
    if memory is None:
        return None
    key = []
    for item in memory if isinstance(memory, (list, tuple)) else [memory]:
        if isinstance(item, (CompressedMemory, MemoryWithText)):
            key.append((item.memory if isinstance(item, MemoryWithText) else item).source_hash)
        elif isinstance(item, Document) or (isinstance(item, str) and not item.endswith(".rccmem")):
            text = item.page_content if isinstance(item, Document) else item
            key.append(hashlib.sha256(text.encode()).hexdigest())
        else:
            key.append(str(item))
    return key
