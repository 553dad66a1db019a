"""JSON-schema constrained generation: valid by construction even from a random model."""

import random
import re

import jsonschema
import pytest
import torch
from pydantic import BaseModel

from rcc_model.json_schema import UnsupportedSchemaError
from rcc_model.structured import Cursor, SchemaDecoder, generate_json

DOC = "The lighthouse keeper wrote the date in the log every evening. " * 4

SCHEMAS = [
    {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
     "required": ["city", "days"]},
    {"type": "object", "properties": {
        "unit": {"enum": ["celsius", "fahrenheit"]}, "ok": {"type": "boolean"}, "ratio": {"type": "number"},
        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
        "note": {"anyOf": [{"type": "string"}, {"type": "null"}]}}},
    {"type": "array", "items": {"type": "integer"}, "minItems": 1, "maxItems": 2},
]


@pytest.mark.parametrize("schema", SCHEMAS)
def test_generated_json_always_matches_the_schema(text_rcc, schema):
    memory = text_rcc.compress(DOC)
    value = text_rcc.generate_json(memory, [{"role": "user", "content": "Answer in JSON."}], schema)
    jsonschema.validate(value, schema)


def test_pydantic_schemas_with_references_work(text_rcc):
    class Place(BaseModel):
        name: str
        population: int

    class Trip(BaseModel):
        destination: Place
        nights: int

    schema = Trip.model_json_schema()
    value = text_rcc.generate_json(text_rcc.compress(DOC), "Plan a trip:", schema)
    Trip.model_validate(value)


def test_a_token_budget_cuts_values_short_and_keeps_the_json_valid(text_rcc):
    schema = SCHEMAS[1]  # two strings, an array of strings, a number: a random model rambles in each
    state = text_rcc.prefill_prompt(text_rcc.compress(DOC), "Answer in JSON.")
    with torch.no_grad():
        free, cut = Cursor(text_rcc, state.clone()), Cursor(text_rcc, state.clone(), budget=6)
        SchemaDecoder(text_rcc, schema).write(free, schema)
        value = SchemaDecoder(text_rcc, schema).write(cut, schema)
    jsonschema.validate(value, schema)
    assert free.taken > 6 and not free.truncated
    assert cut.truncated and cut.taken <= 6 + 1  # a number keeps one digit past the budget


def test_unsupported_schemas_are_refused_up_front(text_rcc):
    with pytest.raises(ValueError, match="cannot constrain"):
        SchemaDecoder(text_rcc, {"type": "object", "properties": {"x": {"type": "tuple"}}})
    with pytest.raises(ValueError, match="cannot constrain"):  # pydantic's tuple[int, int]
        SchemaDecoder(text_rcc, {"type": "array", "prefixItems": [{"type": "integer"}] * 2, "minItems": 2})
    with pytest.raises(ValueError, match="cannot follow"):
        SchemaDecoder(text_rcc, {"$ref": "http://example.invalid/schema"})


def test_text_only_rules_out_every_token_that_opens_a_json_object(text_rcc):
    from rcc_model.structured import text_only

    with torch.no_grad():
        state = text_rcc.prefill_prompt(text_rcc.compress(DOC), "Call a tool.")
    brace = text_rcc.encode_text("{")[0]
    state.logits[0, brace] = 1e4  # the model "wants" to write a JSON call
    answer = text_only(state, text_rcc.tokenizer)
    assert not text_rcc.tokenizer.decode([int(answer.logits[0].argmax())]).lstrip().startswith("{")
    assert int(state.logits[0].argmax()) == brace  # the state itself is untouched


# ------------------------------------------------------------------ every keyword honoured or refused
def test_the_schemas_seen_wrong_are_now_written_as_they_say(text_rcc):
    schemas = [
        {"type": "array", "items": {"type": "boolean"}, "minItems": 10},
        {"type": "string", "maxLength": 2, "pattern": "^[0-9]+$"},
        {"type": "integer", "minimum": 1e6},
        {"type": "number", "minimum": -5.5, "exclusiveMaximum": -2},
        {"type": "string", "minLength": 5, "maxLength": 6},
        {"type": "string", "format": "date"},
        {"type": "object", "properties": {"when": {"$ref": "#/$defs/Day"}}, "$defs": {"Day": {
            "type": "string", "pattern": r"^\d{2}/\d{2}$"}}},
    ]
    state = text_rcc.prefill_prompt(text_rcc.compress(DOC), "Answer in JSON.")
    for schema in schemas:
        for budget in (None, 2):  # a value cut short for the budget still meets every bound
            jsonschema.validate(generate_json(text_rcc, state.clone(), schema, budget)[0], schema)


@pytest.mark.parametrize(("schema", "keyword"), [
    ({"type": "array", "items": {"type": "boolean"}, "minItems": 3, "maxItems": 1}, "minItems 3 > maxItems 1"),
    ({"type": "string", "maxLength": 2, "pattern": "^[0-9]{3}$"}, "pattern"),
    ({"type": "string", "minLength": 4, "maxLength": 3}, "minLength 4 > maxLength 3"),
    ({"enum": []}, "'enum' allows no value"),
    ({"type": "integer", "enum": ["a", "b"]}, "'enum' allows no value"),
    ({"type": "string", "const": 3}, "'const' allows no value"),
    ({"type": "integer", "minimum": 5, "maximum": 4}, "no integer satisfies"),
    ({"type": "number", "minimum": 0.2, "maximum": 0.7}, "no integer satisfies"),
    ({"$ref": "#/$defs/Missing"}, "names no definition"),
    ({"$defs": {"N": {"type": "object", "properties": {"next": {"$ref": "#/$defs/N"}}}}, "$ref": "#/$defs/N"},
     "refers to itself"),
    ({"type": "object", "properties": {"kids": {"type": "array", "items": {"$ref": "#"}}}}, "refers to itself"),
    ({"type": "array", "items": {"type": "integer"}, "uniqueItems": True}, "'uniqueItems'"),
    ({"type": "integer", "multipleOf": 3}, "'multipleOf'"),
    ({"type": "string", "format": "email"}, "format 'email'"),
    ({"type": "string", "pattern": "(unclosed"}, "not a regular expression"),
    ({"type": "object", "properties": {}, "required": ["x"]}, "'required' names 'x'"),
    ({"oneOf": [{"type": "integer"}, {"type": "number"}]}, "'oneOf' branches"),
    ({"type": "integer", "exclusiveMinimum": True, "minimum": 0}, "'exclusiveMinimum' must be a finite number"),
    ({"type": ["string", "null"]}, "use 'anyOf'"),
    ({"type": "string", "enum": ["a", "bb"], "maxLength": 1}, "'enum'/'const' with 'maxLength'"),
    ({"type": "array", "items": {"type": "integer"}, "minItems": 10_000}, "minItems 10000 forces 10,000"),
    ({"type": "array", "items": {"type": "array", "items": {"type": "integer"}, "minItems": 100}, "minItems": 100},
     "minItems 100 forces 10,000"),  # nested minimums multiply: every output would be unbounded in time
    ({"type": "array", "items": {"type": "string", "minLength": 300}, "minItems": 4}, "minLength 300 forces 1,200"),
])
def test_what_cannot_be_honoured_is_refused_up_front_naming_the_keyword(schema, keyword):
    with pytest.raises(UnsupportedSchemaError, match=re.escape(keyword)):
        SchemaDecoder.check_schema(schema)


PATTERNS = [r"^[0-9]+$", "[A-Z]", r"^[a-z]{2,4}$", "^(yes|no)$", r"^\d{3}-\d{4}$", "x", r"^\w+ \w+$"]


def random_schema(rng: random.Random, depth: int = 0) -> dict:
    """A random schema over the keywords constrained decoding supports (some combinations unsatisfiable)."""
    kinds = ["string", "integer", "number", "boolean", "null", "enum", "const"]
    kinds += ["object", "array", "anyOf", "oneOf", "ref"] if depth < 2 else []
    kind = rng.choice(kinds)
    if kind == "string":
        schema: dict = {"type": "string"}
        if rng.random() < 0.4:
            schema["minLength"] = rng.randint(0, 6)
        if rng.random() < 0.4:
            schema["maxLength"] = rng.randint(0, 9)
        if rng.random() < 0.4:
            schema["pattern"] = rng.choice(PATTERNS)
        elif rng.random() < 0.15:
            schema["format"] = rng.choice(["date", "time", "date-time", "uuid"])
        return schema
    if kind in ("integer", "number"):
        schema = {"type": kind}
        for key in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
            if rng.random() < 0.3:
                schema[key] = rng.choice([rng.randint(-60, 60), rng.uniform(-60, 60), 10**rng.randint(3, 9)])
        return schema
    if kind in ("boolean", "null"):
        return {"type": kind}
    if kind == "enum":
        values = rng.sample(["a", "bb", 3, -7, 2.5, True, None, [1], {"k": 1}], rng.randint(0, 4))
        return {"enum": values, **({"type": rng.choice(["string", "integer"])} if rng.random() < 0.3 else {})}
    if kind == "const":
        return {"const": rng.choice(["x", 0, False, None, [1, 2]])}
    if kind == "object":
        properties = {f"p{i}": random_schema(rng, depth + 1) for i in range(rng.randint(0, 3))}
        return {"type": "object", "properties": properties,
                "required": [k for k in properties if rng.random() < 0.5], "additionalProperties": False}
    if kind == "array":
        schema = {"type": "array", "items": random_schema(rng, depth + 1)}
        if rng.random() < 0.5:
            schema["minItems"] = rng.choice([0, 1, 2, 9])
        if rng.random() < 0.5:
            schema["maxItems"] = rng.randint(0, 3)
        return schema
    if kind in ("anyOf", "oneOf"):
        return {kind: [random_schema(rng, depth + 1) for _ in range(rng.randint(1, 3))]}
    return {"$ref": "#/$defs/Shared", "description": "a reference"}


def test_every_schema_accepted_is_honoured_property(text_rcc):
    """Seeded random schemas over every supported keyword: each is refused up front, or what constrained
    decoding writes for it validates (with and without a token budget)."""
    rng = random.Random(46)
    state = text_rcc.prefill_prompt(text_rcc.compress(DOC), "Answer in JSON.")
    accepted = refused = 0
    for _ in range(120):
        schema = random_schema(rng)
        schema["$defs"] = {"Shared": random_schema(rng, depth=2)}
        jsonschema.Draft202012Validator.check_schema(schema)  # a valid JSON schema, whatever it asks
        try:
            SchemaDecoder.check_schema(schema)
        except UnsupportedSchemaError:
            refused += 1
            continue
        value, _ = generate_json(text_rcc, state.clone(), schema, rng.choice([None, 3, 12]))
        jsonschema.validate(value, schema)
        accepted += 1
    assert accepted >= 70 and refused >= 10  # both outcomes exercised
