"""JSON generation that is valid by construction: the decoder fills in a JSON-schema skeleton.

Structure (braces, keys, commas, quotes) is forced; only values are generated, each under a token mask
for its type: strings from tokens without quotes, backslashes or control characters; numbers from digit
tokens; booleans, enums and `anyOf` branches by comparing the model's scores of the alternatives. A small
local model thus always returns JSON that parses and matches the schema, whatever it "wants" to write.

The supported schema subset is `rcc_model.json_schema`'s; anything else is an `UnsupportedSchemaError` (a
`ValueError`) up front, never a silently wrong output.
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
from rcc_model.json_schema import Schema, StringRules

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


@lru_cache(maxsize=4)
def _clean_string_tokens(tokenizer) -> list[bool]:
    """Per token: allowed in a JSON string and whole characters (what a string of length rules is built from)."""
    string_ok, _, texts = _vocabulary(tokenizer)
    return [ok and "\ufffd" not in text for ok, text in zip(string_ok.tolist(), texts)]


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
    """Writes one JSON value for a schema through a `Cursor`; the schema is checked first
    (`rcc_model.json_schema`: what is not honoured is an `UnsupportedSchemaError`)."""

    def __init__(self, model, schema: dict[str, Any]):
        self.model = model
        self.schema = Schema(schema)
        self.schema.check()
        string_ok, digits, self.texts = _vocabulary(model.tokenizer)
        self.string_ok, self.digits = string_ok, digits
        self.clean = _clean_string_tokens(model.tokenizer)
        self.digit_ids = digits.nonzero().flatten().tolist()
        self.quote, self.minus = self.texts.index('"'), self.texts.index("-")

    @classmethod
    def check_schema(cls, schema: dict[str, Any]) -> None:
        """Raise `UnsupportedSchemaError` if generation cannot be constrained to `schema` (no model needed)."""
        Schema(schema).check()

    def resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        return self.schema.resolve(schema)

    # -------------------------------------------------------------- writing
    def write(self, cursor: Cursor, schema: dict[str, Any]) -> Any:
        schema = self.resolve(schema)
        if "const" in schema or "enum" in schema:
            values = self.schema.values(schema)
            options = [json.dumps(v) for v in values]
            choice = cursor.choose(options) if len(options) > 1 else 0
            cursor.force(options[choice])
            return values[choice]
        branches = schema.get("anyOf") or schema.get("oneOf")
        if branches:
            starts = [self.opening(b) for b in branches]
            return self.write(cursor, branches[cursor.choose(starts)])
        kind = schema["type"]
        if kind == "object":
            return self.write_object(cursor, schema)
        if kind == "array":
            return self.write_array(cursor, schema)
        if kind == "string":
            return self.write_string(cursor, self.schema.string_rules(schema))
        if kind in ("integer", "number"):
            return self.write_number(cursor, schema, kind)
        if kind == "boolean":
            value = cursor.choose(["true", "false"]) == 0
            cursor.force("true" if value else "false")
            return value
        cursor.force("null")
        return None

    def opening(self, schema: dict[str, Any]) -> str:
        """The first characters a value of this schema starts with (to score alternatives)."""
        schema = self.resolve(schema)
        if "const" in schema or "enum" in schema:
            return json.dumps(self.schema.values(schema)[0])[:2]
        return {"object": "{", "array": "[", "string": '"', "integer": "1", "number": "1", "boolean": "t",
                "null": "null"}.get(schema.get("type"), '"')

    def write_object(self, cursor: Cursor, schema: dict[str, Any]) -> dict[str, Any]:
        """Every property, in order (required or not: the schema's bounds on their count allow that)."""
        value: dict[str, Any] = {}
        cursor.force("{")
        for i, (key, sub) in enumerate(schema.get("properties", {}).items()):
            cursor.force((", " if i else "") + json.dumps(key) + ": ")
            value[key] = self.write(cursor, sub)
        cursor.force("}")
        return value

    def write_array(self, cursor: Cursor, schema: dict[str, Any]) -> list[Any]:
        """`minItems` items at least, then more while the model prefers them, up to `maxItems` (at most
        `_MAX_ARRAY_ITEMS` past the minimum) or the budget."""
        items = schema.get("items", {"type": "string"})
        low, cap = schema.get("minItems", 0), schema.get("maxItems")
        high = cap if cap is not None and cap <= _MAX_ARRAY_ITEMS else max(low, _MAX_ARRAY_ITEMS)
        values: list[Any] = []
        cursor.force("[")
        while len(values) < high:
            if len(values) >= low and cursor.exhausted:
                cursor.truncated = True
                break
            if len(values) >= low:
                more = ", " if values else self.opening(items)
                if cursor.choose([more, "]"]) == 1:
                    break
            if values:
                cursor.force(", ")
            values.append(self.write(cursor, items))
        cursor.force("]")
        return values

    def write_string(self, cursor: Cursor, rules: StringRules | None = None) -> str:
        """A string of tokens the model prefers among those that keep `rules` satisfiable; where the budget or
        `_MAX_STRING_TOKENS` ends it before the rules are met, the shortest completion found is written."""
        if rules is None or rules.trivial:
            return self._free_string(cursor)
        cursor.force('"')
        text = ""
        for _ in range(_MAX_STRING_TOKENS):
            if cursor.exhausted:
                cursor.truncated = True
                break
            token = self._string_token(cursor, text, rules)
            if token is None:
                break
            text += self.texts[token]
            cursor.take(token)
        if not rules.done(text):
            rest = rules.complete(text)
            if rest is None:
                raise ValueError(f"could not complete the string {text!r} to {rules.low} to {rules.high} "
                                 f"characters matching {rules.patterns}: simplify the pattern")
            cursor.force(rest)
            text += rest
        cursor.force_ids([self.quote])
        return text

    def _string_token(self, cursor: Cursor, text: str, rules: StringRules) -> int | None:
        """The model's favourite token that keeps `text` satisfiable, or None for the closing quote (preferred,
        or nothing else fits)."""
        first: dict[str, bool] = {}  # whether text + a token's first character can still be satisfied
        for token in cursor.logits.argsort(descending=True).tolist():
            if token == self.quote and rules.done(text):
                return None
            if not self.clean[token]:
                continue
            piece = self.texts[token]
            if piece[0] not in first:
                first[piece[0]] = rules.prefix_ok(text + piece[0])
            if first[piece[0]] and rules.viable(text + piece):
                return token
        return None

    def _free_string(self, cursor: Cursor) -> str:
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

    def write_number(self, cursor: Cursor, schema: dict[str, Any], kind: str) -> int | float:
        """An integer within the schema's bounds: a sign where the range allows both and the model prefers
        "-", then digits (`_digits`)."""
        low, high = self.schema.integer_range(schema)
        negative = high is not None and high < 0
        if not negative and (low is None or low < 0):
            negative = bool(cursor.logits[self.minus] > cursor.logits[self.digit_ids].max())
        if negative:
            cursor.force("-")
            value = -self._digits(cursor, 1 if high is None else max(1, -high), None if low is None else -low)
        else:
            value = self._digits(cursor, max(0, low or 0), high)
        return float(value) if kind == "number" and abs(value) < 2**53 else value

    def _digits(self, cursor: Cursor, low: int, high: int | None) -> int:
        """Digits of an integer in [low, high] (high None: unbounded) until the model prefers anything else
        once one is reached; at least one digit, even past the budget (valid JSON)."""
        text = ""
        while True:
            allowed = [t for t in self.digit_ids if _can_reach(text + self.texts[t], low, high)]
            reached = text != "" and low <= int(text) and (high is None or int(text) <= high)
            if reached and (not allowed or len(text) >= _MAX_NUMBER_TOKENS or cursor.exhausted
                            or not self.digits[int(cursor.logits.argmax())]):
                cursor.truncated |= cursor.exhausted and bool(allowed)
                return int(text)
            token = max(allowed, key=lambda t: float(cursor.logits[t]))  # non-empty: the range was checked
            text += self.texts[token]
            cursor.take(token)


def _can_reach(digits: str, low: int, high: int | None) -> bool:
    """Whether `digits` (no leading zero) are, or begin, a number in [low, high]."""
    if len(digits) > 1 and digits[0] == "0":
        return False
    value = int(digits)
    if value == 0:
        return low <= 0
    if high is None:
        return True
    for extra in range(len(str(high)) - len(digits) + 1):
        first = value * 10**extra
        if first <= high and first + 10**extra - 1 >= low:
            return True
    return False


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
