"""The JSON-schema subset constrained decoding honours (`rcc_model.structured`), checked before anything is
generated: a schema is either written exactly as it says or refused with `UnsupportedSchemaError` naming the
keyword and where it is, never answered with JSON that does not validate.

Supported: `type` (one of object, array, string, integer, number, boolean, null); object `properties`,
`required`, `additionalProperties`, `minProperties`/`maxProperties`; array `items`, `minItems`/`maxItems`;
string `minLength`/`maxLength`, `pattern` (searched, as JSON Schema does), `format` date, time, date-time and
uuid; integer/number `minimum`/`maximum`, `exclusiveMinimum`/`exclusiveMaximum` (numbers are written as
integers); `enum` and `const` (with `type` at most); `anyOf`, `oneOf` whose branches cannot overlap, `allOf` of
one schema; `$ref` into the document (`#`, `#/$defs/...`), not recursive. Annotations (title, description,
default, examples, ...) are ignored.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import regex

_ANNOTATIONS = {"title", "description", "default", "examples", "$schema", "$id", "$comment", "deprecated",
                "readOnly", "writeOnly", "$defs", "definitions", "discriminator", "additionalProperties"}
_TYPES = {"object", "array", "string", "integer", "number", "boolean", "null"}
_COMBINATORS = ("anyOf", "oneOf", "allOf")
_KEYWORDS = {"type", "enum", "const", "$ref", *_COMBINATORS, "properties", "required", "minProperties",
             "maxProperties", "items", "minItems", "maxItems", "minLength", "maxLength", "pattern", "format",
             "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"}
FORMATS = {  # formats written through a pattern every string of which the format accepts
    "date": r"^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])$",
    "time": r"^([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]Z$",
    "date-time": r"^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]Z$",
    "uuid": r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$",
}
# Characters a string may be completed with when the model's own tokens cannot finish it (`complete`).
_ALPHABET = "".join(chr(c) for c in range(32, 127) if chr(c) not in '"\\')
_SEARCH_NODES = 4000  # partial matches a completion search may try before giving up


MAX_FORCED = 1024  # items or characters a schema's minimums may force into one output


class UnsupportedSchemaError(ValueError):
    """A JSON schema that constrained decoding cannot honour (an unsupported keyword, a combination no value
    satisfies, a `$ref` to nothing or to itself), refused before anything is generated."""


class Schema:
    """A root schema: `$ref` resolution, the up-front check (`check`), and the rules a writer follows."""

    def __init__(self, root: dict[str, Any]):
        self.root = root
        self._repeats = 1  # how many times the schema being checked is written at least (arrays' minItems, nested)

    def resolve(self, schema: dict[str, Any], where: str = "#") -> dict[str, Any]:
        """`schema` with `$ref`s (and an `allOf` of one schema) followed to the schema they name."""
        seen: list[str] = []
        while isinstance(schema, dict) and ("$ref" in schema or "allOf" in schema):
            if "allOf" in schema:
                if not isinstance(schema["allOf"], list) or len(schema["allOf"]) != 1:
                    raise UnsupportedSchemaError(f"{where}: 'allOf' of {len(schema['allOf'])} schemas is not "
                                                 "supported: merge them into one schema")
                _only_annotations(schema, "allOf", where)
                schema = schema["allOf"][0]
                continue
            ref = schema["$ref"]
            _only_annotations(schema, "$ref", where)
            if ref in seen:
                raise UnsupportedSchemaError(f"{where}: the schema refers to itself through '$ref' {ref!r}: "
                                             "recursive schemas are not supported; unroll it to a fixed depth")
            seen.append(ref)
            schema = self._target(ref, where)
        return schema

    def _target(self, ref: Any, where: str) -> dict[str, Any]:
        if not isinstance(ref, str) or not ref.startswith("#"):
            raise UnsupportedSchemaError(f"{where}: cannot follow the schema reference {ref!r}: only references "
                                         "into the same schema ('#/$defs/...') are supported")
        node: Any = self.root
        for part in (p.replace("~1", "/").replace("~0", "~") for p in ref[1:].split("/")[1:]):
            if not isinstance(node, dict) or part not in node:
                raise UnsupportedSchemaError(f"{where}: '$ref' {ref!r} names no definition in the schema: add "
                                             f"it (no {part!r} there)")
            node = node[part]
        if not isinstance(node, dict):
            raise UnsupportedSchemaError(f"{where}: '$ref' {ref!r} names {node!r}, not a schema")
        return node

    # -------------------------------------------------------------- the check
    def check(self, schema: dict[str, Any] | None = None, where: str = "#", refs: tuple[str, ...] = ()) -> None:
        """Raise `UnsupportedSchemaError` unless every value this schema allows can be written as it says."""
        schema = self.root if schema is None else schema
        if not isinstance(schema, dict):
            raise UnsupportedSchemaError(f"{where}: a schema is a JSON object, got {schema!r}")
        if "$ref" in schema:
            ref = schema["$ref"]
            if ref in refs:
                raise UnsupportedSchemaError(f"{where}: the schema refers to itself through '$ref' {ref!r}: "
                                             "recursive schemas are not supported; unroll it to a fixed depth")
            self.resolve(schema, where)
            self.check(self._target(ref, where), f"{where}/$ref", (*refs, ref))
            return
        if "allOf" in schema:
            self.resolve(schema, where)
            self.check(schema["allOf"][0], f"{where}/allOf/0", refs)
            return
        unknown = sorted(set(schema) - _KEYWORDS - _ANNOTATIONS)
        if unknown:
            raise UnsupportedSchemaError(f"{where}: cannot constrain generation to the JSON-schema keyword "
                                         f"{unknown[0]!r}; supported: {', '.join(sorted(_KEYWORDS))}")
        if "enum" in schema or "const" in schema:
            self._check_values(schema, where)
            return
        for key in ("anyOf", "oneOf"):
            if key in schema:
                self._check_branches(schema, key, where, refs)
                return
        kind = schema.get("type")
        if not isinstance(kind, str) or kind not in _TYPES:
            hint = "; use 'anyOf' for a choice of types" if isinstance(kind, list) else ""
            raise UnsupportedSchemaError(f"{where}: cannot constrain generation to schema type {kind!r}{hint} "
                                         f"({json.dumps(schema)[:80]})")
        if kind == "object":
            self._check_object(schema, where, refs)
        elif kind == "array":
            if not isinstance(schema.get("items", {}), dict):
                raise UnsupportedSchemaError(f"{where}: 'items' must be one schema, got {schema['items']!r} (tuple "
                                             "schemas are not supported)")
            low, high = _counts(schema, "minItems", "maxItems", where)
            self._forced(low, "minItems", where)
            if high != 0:
                outer, self._repeats = self._repeats, self._repeats * max(low, 1)
                try:
                    self.check(schema.get("items", {"type": "string"}), f"{where}/items", refs)
                finally:
                    self._repeats = outer
        elif kind == "string":
            self.string_rules(schema, where)
        elif kind in ("integer", "number"):
            self.integer_range(schema, where)

    def _check_values(self, schema: dict[str, Any], where: str) -> None:
        extra = sorted(set(schema) - _ANNOTATIONS - {"enum", "const", "type"})
        if extra:
            raise UnsupportedSchemaError(f"{where}: 'enum'/'const' with {extra[0]!r} is not supported: list only "
                                         "the values allowed")
        if not isinstance(schema.get("type", "null"), str) or schema.get("type", "null") not in _TYPES:
            raise UnsupportedSchemaError(f"{where}: unknown schema type {schema['type']!r}")
        values = self.values(schema)
        if not values:
            key = "enum" if "enum" in schema else "const"
            raise UnsupportedSchemaError(f"{where}: '{key}' allows no value ({json.dumps(schema)[:80]}): give at "
                                         "least one value of the schema's type")

    def _check_branches(self, schema: dict[str, Any], key: str, where: str, refs: tuple[str, ...]) -> None:
        _only_annotations(schema, key, where)
        branches = schema[key]
        if not isinstance(branches, list) or not branches:
            raise UnsupportedSchemaError(f"{where}: '{key}' needs a non-empty list of schemas, got {branches!r}")
        for i, branch in enumerate(branches):
            self.check(branch, f"{where}/{key}/{i}", refs)
        if key == "oneOf":  # exactly one branch must match what is written: branches of distinct kinds
            kinds = [self.kind(b, where) for b in branches]
            if None in kinds or len(set(kinds)) != len(kinds):
                raise UnsupportedSchemaError(f"{where}: 'oneOf' branches that a value can match together are not "
                                             "supported (give each branch its own type, integer and number "
                                             "counting as one), or use 'anyOf'")

    def kind(self, schema: dict[str, Any], where: str) -> str | None:
        """The JSON type every value of `schema` has (integer and number as "number"), None when not one."""
        schema = self.resolve(schema, where)
        if "enum" in schema or "const" in schema or "anyOf" in schema or "oneOf" in schema:
            return None
        return "number" if schema.get("type") == "integer" else schema.get("type")

    def _check_object(self, schema: dict[str, Any], where: str, refs: tuple[str, ...]) -> None:
        properties = schema.get("properties", {})
        if not isinstance(properties, dict):
            raise UnsupportedSchemaError(f"{where}: 'properties' must be an object, got {properties!r}")
        missing = [key for key in schema.get("required", []) if key not in properties]
        if missing:
            raise UnsupportedSchemaError(f"{where}: 'required' names {missing[0]!r}, which 'properties' does not "
                                         "describe: add its schema")
        low, high = _counts(schema, "minProperties", "maxProperties", where)
        if not low <= len(properties) <= (len(properties) if high is None else high):
            raise UnsupportedSchemaError(f"{where}: every property is written, {len(properties)}, outside "
                                         f"minProperties/maxProperties [{low}, {high}]")
        for key, sub in properties.items():
            self.check(sub, f"{where}/properties/{key}", refs)

    # -------------------------------------------------------------- rules the writer follows
    def values(self, schema: dict[str, Any]) -> list[Any]:
        """The values an `enum`/`const` schema allows (of its `type`, when it has one)."""
        values = [schema["const"]] if "const" in schema else schema["enum"]
        if not isinstance(values, list):
            raise UnsupportedSchemaError(f"'enum' must be a list of values, got {values!r}")
        kind = schema.get("type")
        return values if kind is None else [v for v in values if _has_type(v, kind)]

    def integer_range(self, schema: dict[str, Any], where: str = "#") -> tuple[int | None, int | None]:
        """(lowest, highest) integer a number or integer schema allows, None for no bound."""
        bounds = {}
        for key in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
            if key in schema:
                value = schema[key]
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                    raise UnsupportedSchemaError(f"{where}: {key!r} must be a finite number, got {value!r}")
                bounds[key] = value
        lows = [math.ceil(bounds["minimum"])] if "minimum" in bounds else []
        lows += [math.floor(bounds["exclusiveMinimum"]) + 1] if "exclusiveMinimum" in bounds else []
        highs = [math.floor(bounds["maximum"])] if "maximum" in bounds else []
        highs += [math.ceil(bounds["exclusiveMaximum"]) - 1] if "exclusiveMaximum" in bounds else []
        low, high = max(lows, default=None), min(highs, default=None)
        if low is not None and high is not None and low > high:
            raise UnsupportedSchemaError(f"{where}: no integer satisfies {bounds} (numbers are written as "
                                         "integers): widen the range")
        return low, high

    def _forced(self, minimum: int, key: str, where: str) -> None:
        """Refuse a minimum that forces more than `MAX_FORCED` items or characters (nested minimums multiply):
        the output must be written whatever the token budget, so it would bound no time."""
        if minimum * self._repeats > MAX_FORCED:
            raise UnsupportedSchemaError(f"{where}: {key} {minimum} forces {minimum * self._repeats:,} values or "
                                         f"characters into every output (at most {MAX_FORCED:,}): lower it")

    def string_rules(self, schema: dict[str, Any], where: str = "#") -> StringRules:
        """The length bounds and patterns of a string schema, refused when no string satisfies them all."""
        low, high = _counts(schema, "minLength", "maxLength", where)
        self._forced(low, "minLength", where)
        patterns = []
        if "pattern" in schema:
            patterns.append(schema["pattern"])
        if "format" in schema:
            if schema["format"] not in FORMATS:
                raise UnsupportedSchemaError(f"{where}: cannot constrain generation to the string format "
                                             f"{schema['format']!r}; supported: {', '.join(FORMATS)}")
            patterns.append(FORMATS[schema["format"]])
        for pattern in patterns:
            try:
                re.compile(pattern)
            except (re.error, TypeError) as e:
                raise UnsupportedSchemaError(f"{where}: 'pattern' {pattern!r} is not a regular expression: {e}"
                                             ) from e
        rules = StringRules(low, high, patterns)
        if not rules.trivial and rules.complete("") is None:
            found = "matches" if rules.searched_all else "was found (in a bounded search) that matches"
            raise UnsupportedSchemaError(f"{where}: no string of {low} to {high} characters {found} the "
                                         f"pattern(s) {patterns}: change 'pattern' or the length bounds")
        return rules


class StringRules:
    """What a string must satisfy: `low` <= length <= `high` (None: no bound) and every pattern found in it."""

    def __init__(self, low: int, high: int | None, patterns: list[str]):
        self.low, self.high, self.patterns = low, high, patterns
        self._searches = [re.compile(p) for p in patterns]
        # fullmatch(partial=True) of ".*?(p).*" tells whether a text can still grow into one p is found in
        self._prefixes = [regex.compile(f"(?s:.*?)(?:{p})(?s:.*)") for p in patterns]
        literal = dict.fromkeys(c for p in patterns for c in p if c in _ALPHABET)  # the patterns' own first
        self._alphabet = "".join(literal) + "".join(c for c in _ALPHABET if c not in literal)
        self.searched_all = True  # whether the last `complete` tried every completion (None then proves none)

    @property
    def trivial(self) -> bool:
        return self.low == 0 and self.high is None and not self.patterns

    def done(self, text: str) -> bool:
        """Whether `text` satisfies every rule (the string may end)."""
        return (self.low <= len(text) and (self.high is None or len(text) <= self.high)
                and all(p.search(text) for p in self._searches))

    def prefix_ok(self, text: str) -> bool:
        """Whether `text` fits the length bound and can still grow into a match of every pattern (a quick test
        that `viable` completes)."""
        return (self.high is None or len(text) <= self.high) and all(p.fullmatch(text, partial=True)
                                                                     for p in self._prefixes)

    def viable(self, text: str) -> bool:
        """Whether `text` is known to extend into a string that satisfies the rules (a completion was found), so
        that a string built of viable prefixes never reaches a dead end."""
        return self.prefix_ok(text) and self.complete(text) is not None

    def complete(self, text: str) -> str | None:
        """Characters that make `text` satisfy the rules, short ones first: depth-first searches over printable
        characters (the patterns' own first), pruned by partial matching, to growing lengths, each bounded in
        effort; None where none were found (`searched_all` says whether none exists)."""
        shortest = max(self.low, len(text))
        longest = self.high if self.high is not None else shortest + 64
        budget = [0]

        def search(current: str, limit: int) -> str | None:
            if self.done(current):
                return current
            if len(current) >= limit or budget[0] <= 0:
                return None
            for char in self._alphabet:
                budget[0] -= 1
                if self.prefix_ok(current + char) and (found := search(current + char, limit)):
                    return found
                if budget[0] <= 0:
                    return None
            return None

        for limit in sorted({min(shortest + extra, longest) for extra in (0, 4, 16, longest)}):
            budget[0] = _SEARCH_NODES
            if (found := search(text, limit)) is not None:
                self.searched_all = True
                return found[len(text):]
        self.searched_all = budget[0] > 0  # the last search, to the longest length, tried everything
        return None


def _only_annotations(schema: dict[str, Any], key: str, where: str) -> None:
    extra = sorted(set(schema) - _ANNOTATIONS - {key})
    if extra:
        raise UnsupportedSchemaError(f"{where}: {key!r} together with {extra[0]!r} is not supported: move "
                                     f"{extra[0]!r} into the schema(s) {key!r} names")


def _counts(schema: dict[str, Any], low_key: str, high_key: str, where: str) -> tuple[int, int | None]:
    """(`low_key`, `high_key`) of a schema as non-negative integers (high None when absent), low <= high."""
    low, high = schema.get(low_key, 0), schema.get(high_key)
    for key, value in ((low_key, low), (high_key, high)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise UnsupportedSchemaError(f"{where}: {key!r} must be a non-negative integer, got {value!r}")
    if high is not None and low > high:
        raise UnsupportedSchemaError(f"{where}: {low_key} {low} > {high_key} {high}: no value satisfies both")
    return low, high


_PYTHON_TYPES = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}


def _has_type(value: Any, kind: str) -> bool:
    if kind in ("integer", "number"):
        numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
        return numeric and (kind == "number" or float(value).is_integer())
    return isinstance(value, _PYTHON_TYPES[kind])
