"""Bad input at the API edge is a clear error up front, never a silently wrong result or a raw exception from
deep inside (issue 46, "Silently wrong")."""

from __future__ import annotations

import math

import pytest
import torch

from rcc_model import SamplingParams
from tests.conftest import make_rcc
from tests.unit.test_text_generation import scripted

DOC = "The lighthouse keeper wrote the date in the log every evening. " * 3


@pytest.fixture(scope="module")
def tiny():
    """A tiny random RCC (vocabulary of 99 tokens, no tokenizer) and a memory of it."""
    model = make_rcc()
    return model, model.compress(list(range(40)))


# ------------------------------------------------------------------ token ids at the API edge
@pytest.mark.parametrize(("bad", "error", "match"), [
    (b"some text", TypeError, "bytes"),
    (bytearray(b"some text"), TypeError, "bytes"),
    ([True, False], TypeError, "bool"),
    ([1, 2.0], TypeError, "float"),
    (torch.tensor([1.0, 2.0]), TypeError, "dtype"),
    (torch.tensor([True]), TypeError, "dtype"),
    ([1, 99], ValueError, "token id 99 is outside the vocabulary of 99 tokens"),
    ([5, -1], ValueError, "token id -1"),
    ([[1, 2], [3, 1000]], ValueError, "token id 1000"),
    ([b"one", b"two"], TypeError, "bytes"),
    (torch.tensor([[1, 2], [3, 400]]), ValueError, "token id 400"),
])
def test_compress_refuses_what_is_not_token_ids_of_this_model(tiny, bad, error, match):
    with pytest.raises(error, match=match):
        tiny[0].compress(bad)


def test_valid_ids_still_compress_alone_and_in_batches(tiny):
    model, _ = tiny
    assert model.compress([0, 98, 5]).token_count == 3
    assert [m.token_count for m in model.compress([[1, 2], (3, 4, 5)])] == [2, 3]
    assert model.compress(torch.tensor([[1, 2, 3]]))[0].token_count == 3


@pytest.mark.parametrize(("prompt", "error", "match"), [
    ([1, 999], ValueError, "token id 999 is outside the vocabulary of 99"),
    ([True], TypeError, "got True \\(bool\\)"),
    ([], ValueError, "empty list"),
    (b"hi", TypeError, "bytes"),
])
def test_prompts_are_checked_before_decoding(tiny, prompt, error, match):
    model, memory = tiny
    with pytest.raises(error, match=match):
        model.generate_ids(memory, prompt, max_new_tokens=2) if prompt != [] else next(
            model.stream(memory, prompt, max_new_tokens=2))


def test_prompt_ids_after_a_prefilled_memory_are_checked(tiny):
    model, memory = tiny
    with pytest.raises(ValueError, match="token id 123"):
        model.generate_ids(model.prefill_memory(memory), [1, 123], max_new_tokens=2)


def test_stream_with_an_empty_message_list_is_an_error_not_a_free_continuation(text_rcc):
    memory = text_rcc.compress(DOC)
    with pytest.raises(ValueError, match=r"empty list.*None to continue from memory alone"):
        list(text_rcc.stream(memory, [], max_new_tokens=4))
    assert isinstance("".join(text_rcc.stream(memory, None, max_new_tokens=2)), str)  # None: documented


# ------------------------------------------------------------------ sampling parameters
@pytest.mark.parametrize("settings", [
    {"temperature": math.inf}, {"temperature": math.nan}, {"temperature": -0.1}, {"temperature": -math.inf},
    {"top_p": 0.0}, {"top_p": 1.5}, {"top_p": math.nan}, {"top_p": -1.0}, {"max_new_tokens": 0},
])
def test_bad_sampling_parameters_are_refused_up_front(tiny, settings):
    model, memory = tiny
    with pytest.raises(ValueError, match=next(iter(settings))):
        SamplingParams(**settings)
    with pytest.raises(ValueError, match=next(iter(settings))):
        model.generate_ids(memory, [1, 2], **{"max_new_tokens": 2, **settings})


# ------------------------------------------------------------------ instruction reconstruction
QUESTION = "Which date did the keeper write in the log every evening before he went to sleep?"


def test_ask_without_a_question_gives_max_new_tokens_to_the_answer(text_rcc, monkeypatch):
    """The question recalled from memory does not use up the answer's tokens: with 8 new tokens a question longer
    than 8 tokens used to leave an empty answer."""
    from rcc_model import generation
    from rcc_model.prompts import instruction_frame

    tokenizer = text_rcc.tokenizer
    frame = instruction_frame(tokenizer)
    answer = " The keeper wrote the first of May every single evening"
    script = text_rcc.encode_text(QUESTION + frame.turn_end + answer)
    assert len(text_rcc.encode_text(QUESTION)) > 8

    monkeypatch.setattr(generation, "decode_tokens", scripted(script))  # recalls the question, then answers
    memory = text_rcc.compress(DOC + "\n\n" + QUESTION)
    written = text_rcc.ask(memory, None, max_new_tokens=8)
    assert written == tokenizer.decode(text_rcc.encode_text(answer)[:8]).strip()
    assert written.startswith("The keeper wrote")


def test_ask_without_a_question_is_an_error_when_no_question_is_recalled(text_rcc):
    memory = text_rcc.compress(DOC)  # a random decoder never writes the end of the question's turn
    with pytest.raises(ValueError, match="no question was recalled from memory"):
        text_rcc.ask(memory, None, max_new_tokens=4)


@pytest.mark.parametrize("settings", [{"max_new_tokens": 2.5}, {"max_new_tokens": True}, {"temperature": "0.5"},
                                      {"top_p": None}, {"min_new_tokens": 1.0}])
def test_sampling_parameters_of_the_wrong_type_are_type_errors(settings):
    with pytest.raises(TypeError, match=next(iter(settings))):
        SamplingParams(**settings)


def test_a_tiny_temperature_samples_the_greedy_token_instead_of_failing():
    from rcc_model.decoding import sample

    logits = torch.tensor([[0.0, 3.0, 2.9, -1.0]])
    for temperature in (1e-300, 5e-324):
        assert sample(logits, SamplingParams(temperature=temperature), torch.Generator().manual_seed(0)).item() == 1


def test_the_integrations_check_sampling_and_schemas_before_compressing(text_rcc):
    from langchain_core.messages import HumanMessage, SystemMessage
    from llama_index.core.base.llms.types import ChatMessage

    from rcc_integrations.langchain import ChatRCC
    from rcc_integrations.llama_index import RCCLLM
    from rcc_model import UnsupportedSchemaError

    chat, llm = ChatRCC(model=text_rcc, max_tokens=4), RCCLLM(model=text_rcc, max_tokens=4)
    long = DOC * 20  # compressed, were it read
    before = chat.engine.compressions
    for bad in ({"temperature": math.nan}, {"temperature": math.inf}, {"top_p": 0.0}, {"max_tokens": 0}):
        with pytest.raises(ValueError, match=next(iter(bad)).replace("max_tokens", "max_new_tokens")):
            chat.invoke([SystemMessage(long), HumanMessage("When?")], **bad)
        with pytest.raises(ValueError, match=next(iter(bad)).replace("max_tokens", "max_new_tokens")):
            llm.chat([ChatMessage(role="system", content=long), ChatMessage(role="user", content="When?")], **bad)
    with pytest.raises(UnsupportedSchemaError, match="'enum' allows no value"):
        llm.chat([ChatMessage(role="system", content=long), ChatMessage(role="user", content="When?")],
                 json_schema={"enum": []})
    assert chat.engine.compressions == before  # refused before the long message was compressed
