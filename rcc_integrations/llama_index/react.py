"""ReAct steps that parse by construction.

LlamaIndex's `ReActAgent` puts its tools and the "Thought / Action / Action Input" format in a system
header and parses the LLM's text; a small model rarely keeps that format, so the agent never calls a tool.
When `RCCLLM` sees that header it writes the structure itself and lets the model fill it in: a one-line
thought (free text), act or answer (the model's scores, biased towards acting until a tool has answered),
which tool (scores) and its input (JSON-schema-constrained decoding), or the answer (streamed). The model
reads a brief of the tools in place of the header, whose format section it would otherwise copy.
"""

from __future__ import annotations

import ast
import json
import re
from typing import Any

import torch

from rcc_model import Cursor, DecodeState, SchemaDecoder

_TOOL = re.compile(r"^> Tool Name: (?P<name>\S+)\n(?:Tool Description: )?(?P<description>.*?)"
                   r"^Tool Args: (?P<args>\{[^\n]*\})$", re.MULTILINE | re.DOTALL)
_FORMAT_MARKERS = ("## Output Format", "Action Input:")
_ACTION = re.compile(r"^Action: (?P<name>\S+)\nAction Input: (?P<input>\{.*\})\s*$", re.MULTILINE | re.DOTALL)
_STEP_WORDS = re.compile(r"\b(Thought|Action|Action Input|Answer|Observation):")
THOUGHT_TOKENS = 48


def react_tools(system: str) -> dict[str, dict[str, Any]] | None:
    """The tools (name -> argument schema) of a LlamaIndex ReAct system header, or None if `system` is not one."""
    if not all(marker in system for marker in _FORMAT_MARKERS):
        return None
    tools = {}
    for match in _TOOL.finditer(system):
        try:
            tools[match["name"]] = json.loads(match["args"])
        except json.JSONDecodeError as error:
            raise ValueError(f"ReAct tool {match['name']!r}: its Tool Args are not a JSON schema ({error})") from None
    return tools or None


def react_brief(system: str) -> str:
    """What the decoder reads in place of a ReAct header: the tools and what to do, without the header's
    output-format section. The format is written by construction, and a small model copies that section's
    placeholders ("hello world", "[your answer here ...]") into its tool inputs and answers."""
    tools = "\n".join(f"- {m['name']}: {' '.join(m['description'].split())}" for m in _TOOL.finditer(system))
    return ("You answer the user's question. You can look things up with these tools:\n" + tools +
            "\nTo use a tool, give it the user's question. Once a tool has answered, answer from what it said.")


def as_tool_calls(chat: list[dict[str, str]]) -> list[dict[str, str]]:
    """A ReAct conversation as a tool-calling one: each action step as the JSON call it stands for, each
    observation as the tool's result. Read so, the base decoder answers from a result (`answering_from_result`);
    read as ReAct steps, it wrote another action, or added to the result what it knew of the name in it."""
    turns = []
    for turn in chat:
        action = _ACTION.search(turn["content"]) if turn["role"] == "assistant" else None
        if action:
            call = {"name": action["name"], "arguments": _action_input(action["input"])}
            turns.append({"role": "assistant", "content": json.dumps(call)})
        elif turn["role"] == "user" and turn["content"].startswith("Observation:"):
            turns.append({"role": "tool", "content": turn["content"].removeprefix("Observation:").strip()})
        else:
            turns.append(turn)
    return turns


def _action_input(text: str) -> Any:
    """An action's input as written in the history: JSON, or the Python dict that LlamaIndex's ReActAgent
    writes there (`ActionReasoningStep.get_content`); else the text itself."""
    for parse in (json.loads, ast.literal_eval):
        try:
            return parse(text)
        except (ValueError, SyntaxError):
            continue
    return text


def _thought(cursor: Cursor, limit: int) -> str:
    """Greedy free text up to the end of the line (special tokens and step keywords excluded)."""
    tokenizer = cursor.model.tokenizer
    banned = torch.tensor(tokenizer.all_special_ids, dtype=torch.long)
    text = ""
    for _ in range(limit):
        if cursor.exhausted:
            break
        logits = cursor.logits.clone()
        logits[banned] = float("-inf")
        token = int(logits.argmax())
        piece = tokenizer.decode([token])
        if "\n" in piece or _STEP_WORDS.search(text + piece):
            break
        cursor.take(token)
        text += piece
    return text.strip() or "I need to think about the question."


def asks_a_question(schema: dict[str, Any]) -> bool:
    """Whether a tool's arguments are one string named "input": LlamaIndex's schema for a tool that answers a
    question (`QueryEngineTool`, a query engine over an index)."""
    properties = schema.get("properties", {})
    return list(properties) == ["input"] and properties["input"].get("type") == "string"


def react_step(model, state: DecodeState, tools: dict[str, dict[str, Any]], action_bias: float,
               max_new_tokens: int | None = None, question: str | None = None) -> tuple[str, DecodeState | None]:
    """Write one ReAct step from a prefilled single-row `state`.

    Returns the step's text and, when the step is an answer, the decoder state right after "Answer:" for
    the caller to stream the answer from (None when the step is a tool action, which is complete). The
    step acts when the model's score of "Action:" plus `action_bias` (nats) beats its score of "Answer:".
    `max_new_tokens` caps the tokens the model writes into the thought and the tool input (see `Cursor`).
    A tool that answers a question (`asks_a_question`) is given the user's `question` as it was asked, as the
    brief says: the small model shortened it to a keyword ("lighthouse"), which a query engine cannot answer.
    """
    decoders = {name: SchemaDecoder(model, schema) for name, schema in tools.items()}  # unsupported: fail now
    with torch.no_grad():
        cursor = Cursor(model, state, budget=max_new_tokens)
        cursor.force("Thought: ")
        text = "Thought: " + _thought(cursor, THOUGHT_TOKENS)
        cursor.force("\n")
        if cursor.score("Action:") + action_bias >= cursor.score("Answer:"):
            names = list(tools)
            cursor.force("Action:")
            name = names[cursor.choose([f" {n}" for n in names])]
            cursor.force(f" {name}\nAction Input: ")
            if question and asks_a_question(tools[name]):
                arguments = {"input": question}
            else:
                arguments = decoders[name].write(cursor, tools[name])
            return f"{text}\nAction: {name}\nAction Input: {json.dumps(arguments)}", None
        cursor.force("Answer:")
        return f"{text}\nAnswer:", cursor.state
