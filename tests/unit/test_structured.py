"""JSON-schema constrained generation: valid by construction even from a random model."""

import jsonschema
import pytest
import torch
from pydantic import BaseModel

from rcc_model.structured import Cursor, SchemaDecoder

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
