"""JSON generation that is valid by construction: the decoder fills in a JSON-schema skeleton.

Structure (braces, keys, commas, quotes) is forced; only values are generated, each under a token mask
for its type: strings from tokens without quotes, backslashes or control characters; numbers from digit
tokens; booleans, enums and `anyOf` branches by comparing the model's scores of the alternatives. A small
local model thus always returns JSON that parses and matches the schema, whatever it "wants" to write.

Supported schema: object (properties, required), array (items, minItems, maxItems), string (enum, const),
integer, number, boolean, null, enum/const at any level, anyOf/oneOf, $ref into $defs. Anything else is a
`ValueError` up front, never a silently wrong output.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

import torch

from rcc_model.decoding import DecodeState, continuation_logprob, extend

_MAX_STRING_TOKENS = 64
_MAX_NUMBER_TOKENS = 8
_MAX_ARRAY_ITEMS = 8
_STRING_SAFE = re.compile(r'^[^"\\\x00-\x1f]+$')
_DIGITS = re.compile(r"^[0-9]+$")


@lru_cache(maxsize=4)
def _vocabulary(tokenizer) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """(mask of tokens allowed inside a JSON string, mask of digit-only tokens, token texts)."""
    texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
    special = set(tokenizer.all_special_ids)
    string_ok = torch.tensor([bool(_STRING_SAFE.match(t)) and i not in special for i, t in enumerate(texts)])
    digits = torch.tensor([bool(_DIGITS.match(t)) for t in texts])
    return string_ok, digits, texts


@dataclass
class Cursor:
    """A single-row decoder state under constrained writing: feed forced text, take chosen tokens, compare
    the model's scores of alternatives (JSON here; other structured formats build on the same moves).

    `budget` caps the tokens the model chooses (`take`), the caller's max_tokens: forced structure is never
    cut, so the output stays valid; `truncated` records that a value was cut short for it."""

    model: Any
    state: DecodeState
    budget: int | None = None
    taken: int = 0
    truncated: bool = False

    @property
    def exhausted(self) -> bool:
        return self.budget is not None and self.taken >= self.budget

    @property
    def logits(self) -> torch.Tensor:
        return self.state.logits[0]

    def force(self, text: str) -> None:
        self.force_ids(self.model.encode_text(text))

    def force_ids(self, ids: list[int]) -> None:
        self.state = extend(self.model, self.state, ids)

    def take(self, token: int) -> None:
        self.taken += 1
        self.state = extend(self.model, self.state, [token])

    def score(self, text: str) -> float:
        """Log-probability of `text` as the continuation (on a copy of the state)."""
        return continuation_logprob(self.model, self.state, self.model.encode_text(text))

    def choose(self, options: list[str]) -> int:
        return max(range(len(options)), key=lambda i: self.score(options[i]))


class SchemaDecoder:
    """Writes one JSON value for a schema through a `Cursor`."""

    def __init__(self, model, schema: dict[str, Any]):
        self.model = model
        self.root = schema
        self.check(schema)
        string_ok, digits, self.texts = _vocabulary(model.tokenizer)
        self.string_ok, self.digits = string_ok, digits
        self.quote = self.texts.index('"')

    @classmethod
    def check_schema(cls, schema: dict[str, Any]) -> None:
        """Raise `ValueError` if generation cannot be constrained to `schema` (no model needed)."""
        checker = cls.__new__(cls)
        checker.root = schema
        checker.check(schema)

    # -------------------------------------------------------------- validation up front
    def resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        ref = schema.get("$ref")
        if ref is None:
            return schema
        if not ref.startswith("#/"):
            raise ValueError(f"cannot follow the schema reference {ref!r}")
        node: Any = self.root
        for part in ref[2:].split("/"):
            node = node[part]
        return self.resolve(node)

    def check(self, schema: dict[str, Any], depth: int = 0) -> None:
        schema = self.resolve(schema)
        if depth > 8:
            raise ValueError("schema nests more than 8 levels (recursive?)")
        if "enum" in schema or "const" in schema:
            return
        for key in ("anyOf", "oneOf"):
            if key in schema:
                for branch in schema[key]:
                    self.check(branch, depth + 1)
                return
        kind = schema.get("type")
        if kind == "object":
            for sub in schema.get("properties", {}).values():
                self.check(sub, depth + 1)
        elif kind == "array":
            if "prefixItems" in schema:  # a tuple: one schema per position, not written by this decoder
                raise ValueError(f"cannot constrain generation to a tuple schema ({json.dumps(schema)[:80]})")
            self.check(schema.get("items", {"type": "string"}), depth + 1)
        elif kind not in ("string", "integer", "number", "boolean", "null"):
            raise ValueError(f"cannot constrain generation to schema type {kind!r} ({json.dumps(schema)[:80]})")

    # -------------------------------------------------------------- writing
    def write(self, cursor: Cursor, schema: dict[str, Any]) -> Any:
        schema = self.resolve(schema)
        if "const" in schema:
            cursor.force(json.dumps(schema["const"]))
            return schema["const"]
        if "enum" in schema:
            options = [json.dumps(v) for v in schema["enum"]]
            choice = cursor.choose(options)
            cursor.force(options[choice])
            return schema["enum"][choice]
        branches = schema.get("anyOf") or schema.get("oneOf")
        if branches:
            starts = [self.opening(self.resolve(b)) for b in branches]
            return self.write(cursor, branches[cursor.choose(starts)])
        kind = schema["type"]
        if kind == "object":
            return self.write_object(cursor, schema)
        if kind == "array":
            return self.write_array(cursor, schema)
        if kind == "string":
            return self.write_string(cursor)
        if kind in ("integer", "number"):
            return self.write_number(cursor, kind)
        if kind == "boolean":
            value = cursor.choose(["true", "false"]) == 0
            cursor.force("true" if value else "false")
            return value
        cursor.force("null")
        return None

    @staticmethod
    def opening(schema: dict[str, Any]) -> str:
        """The first characters a value of this schema starts with (to score alternatives)."""
        if "const" in schema:
            return json.dumps(schema["const"])[:2]
        if "enum" in schema:
            return json.dumps(schema["enum"][0])[:2]
        return {"object": "{", "array": "[", "string": '"', "integer": "1", "number": "1", "boolean": "t",
                "null": "null"}.get(schema.get("type"), '"')

    def write_object(self, cursor: Cursor, schema: dict[str, Any]) -> dict[str, Any]:
        value: dict[str, Any] = {}
        cursor.force("{")
        for i, (key, sub) in enumerate(schema.get("properties", {}).items()):
            cursor.force((", " if i else "") + json.dumps(key) + ": ")
            value[key] = self.write(cursor, sub)
        cursor.force("}")
        return value

    def write_array(self, cursor: Cursor, schema: dict[str, Any]) -> list[Any]:
        items = schema.get("items", {"type": "string"})
        low, high = schema.get("minItems", 0), min(schema.get("maxItems", _MAX_ARRAY_ITEMS), _MAX_ARRAY_ITEMS)
        values: list[Any] = []
        cursor.force("[")
        while len(values) < high:
            if len(values) >= low and cursor.exhausted:
                cursor.truncated = True
                break
            if len(values) >= low:
                more = ", " if values else self.opening(self.resolve(items))
                if cursor.choose([more, "]"]) == 1:
                    break
            if values:
                cursor.force(", ")
            values.append(self.write(cursor, items))
        cursor.force("]")
        return values

    def write_string(self, cursor: Cursor) -> str:
        cursor.force('"')
        ids: list[int] = []
        while len(ids) < _MAX_STRING_TOKENS:
            logits = cursor.logits.masked_fill(~self.string_ok.to(cursor.logits.device), -math.inf)
            logits[self.quote] = cursor.logits[self.quote]
            token = int(logits.argmax())
            if token == self.quote:
                break
            if cursor.exhausted:
                cursor.truncated = True
                break
            ids.append(token)
            cursor.take(token)
        cursor.force_ids([self.quote])
        # Decoded together: byte-level tokens of one multi-byte character are not text one by one.
        return self.model.tokenizer.decode(ids).replace("\ufffd", "")

    def write_number(self, cursor: Cursor, kind: str) -> int | float:
        """Digits until the model prefers anything else; at least one, even past the budget (valid JSON)."""
        digits = self.digits.to(cursor.logits.device)
        text = ""
        for _ in range(_MAX_NUMBER_TOKENS):
            best = int(cursor.logits.argmax())
            if text and not digits[best]:
                break
            if text and cursor.exhausted:
                cursor.truncated = True
                break
            token = best if digits[best] else int(cursor.logits.masked_fill(~digits, -math.inf).argmax())
            text += self.texts[token]
            cursor.take(token)
        return int(text) if kind == "integer" else float(text)


def generate_json(model, state: DecodeState, schema: dict[str, Any], max_new_tokens: int | None = None
                  ) -> tuple[Any, bool]:
    """Write a JSON value matching `schema`, starting from a prefilled single-row `state`, choosing at most
    `max_new_tokens` tokens (see `Cursor`). Returns (value, whether a value was cut short for the budget)."""
    decoder = SchemaDecoder(model, schema)
    cursor = Cursor(model, state, budget=max_new_tokens)
    with torch.no_grad():
        return decoder.write(cursor, schema), cursor.truncated


TOOL_CALL_PREFIX = '{"name": '


def prefers_tool_call(state: DecodeState, tokenizer, margin: float = 2.0) -> bool:
    """Whether the decoder's next-token scores put "{" (a JSON tool call) within `margin` nats of its
    favourite token: how `tool_choice="auto"` decides between calling a tool and answering in text."""
    log_probs = torch.log_softmax(state.logits[0], -1)
    brace = tokenizer("{", add_special_tokens=False)["input_ids"][0]
    return bool(log_probs[brace] >= log_probs.max() - margin)


@lru_cache(maxsize=4)
def _object_openers(tokenizer) -> torch.Tensor:
    """Mask of the tokens whose text opens a JSON object ("{", '{"', " {", ...), built once per tokenizer."""
    return torch.tensor([t.lstrip().startswith("{") for t in _vocabulary(tokenizer)[2]])


def text_only(state: DecodeState, tokenizer) -> DecodeState:
    """`state` with every token that opens a JSON object ruled out as the next one: once the decision is to
    answer in text, a small model imitating the calls in its history still answers in text."""
    openers = _object_openers(tokenizer).to(state.logits.device)
    return replace(state, logits=state.logits.masked_fill(openers, -math.inf))


def generate_tool_call(model, state: DecodeState, tools: dict[str, dict[str, Any]], name: str | None = None,
                       max_new_tokens: int | None = None) -> tuple[str, Any, bool]:
    """Write `{"name": ..., "arguments": {...}}` for one of `tools` (name -> parameters schema), choosing
    the tool by the model's scores unless `name` is given, the arguments' values in at most `max_new_tokens`
    tokens; returns (name, arguments, whether an argument was cut short for the budget)."""
    decoders = {tool: SchemaDecoder(model, schema) for tool, schema in tools.items()}
    if name is not None and name not in tools:
        raise ValueError(f"tool_choice names {name!r}, which is not among the bound tools {sorted(tools)}")
    with torch.no_grad():
        cursor = Cursor(model, state, budget=max_new_tokens)
        cursor.force(TOOL_CALL_PREFIX)
        names = list(tools)
        chosen = name or names[cursor.choose([json.dumps(n) for n in names])]
        cursor.force(json.dumps(chosen) + ', "arguments": ')
        arguments = decoders[chosen].write(cursor, tools[chosen])
        return chosen, arguments, cursor.truncated
