"""RCCLLM on a tiny RCC with SmolLM2's tokenizer: real LlamaIndex objects, our own logic under test."""

import asyncio

import pytest
from llama_index.core.base.llms.types import ChatMessage, MessageRole
from llama_index.core.callbacks import CallbackManager, TokenCountingHandler

from rcc_integrations.llama_index import RCCLLM

LONG = "The lighthouse keeper wrote the date in the log every evening before supper. " * 20


@pytest.fixture()
def llm(text_rcc):
    return RCCLLM(model=text_rcc, max_tokens=8, compress_threshold=64)


def messages():
    return [ChatMessage(role=MessageRole.SYSTEM, content=LONG), ChatMessage(role=MessageRole.USER, content="When?")]


def test_chat_reads_long_messages_through_memory_and_reports_usage(llm):
    response = llm.chat(messages())
    usage = response.raw["usage"]
    assert usage["memory_slots"] > 0 and usage["prompt_tokens"] > llm.engine.count_tokens(LONG)
    assert usage["completion_tokens"] > 0 and isinstance(response.message.content, str)


def test_stream_deltas_join_to_the_answer_and_the_last_carries_usage(llm):
    responses = list(llm.stream_chat(messages()))
    assert "".join(r.delta for r in responses) == responses[-1].message.content == llm.chat(messages()).message.content
    assert responses[-1].raw["usage"]["completion_tokens"] > 0


def test_complete_is_a_one_message_chat(llm):
    assert llm.complete("Hello").text == llm.chat([ChatMessage(role=MessageRole.USER, content="Hello")]).message.content
    assert "".join(r.delta for r in llm.stream_complete("Hello")) == llm.complete("Hello").text


def test_async_methods_match_sync_and_run_concurrently(llm):
    async def run():
        single = await llm.acomplete("Hello")
        streamed = [r.delta async for r in await llm.astream_complete("Hello")]
        many = await asyncio.gather(*[llm.achat(messages()) for _ in range(3)])
        return single, streamed, many

    single, streamed, many = asyncio.run(run())
    assert single.text == "".join(streamed) == llm.complete("Hello").text
    assert {m.message.content for m in many} == {llm.chat(messages()).message.content}


def test_token_counting_handler_sees_our_counts(text_rcc):
    counter = TokenCountingHandler(tokenizer=lambda text: text_rcc.encode_text(text))
    llm = RCCLLM(model=text_rcc, max_tokens=6, callback_manager=CallbackManager([counter]))
    response = llm.complete("Hello there")
    assert counter.completion_llm_token_count == response.raw["usage"]["completion_tokens"]
    assert counter.prompt_llm_token_count == response.raw["usage"]["prompt_tokens"]


def test_metadata_counts_original_tokens_the_memory_can_cover(llm, text_rcc):
    meta = llm.metadata
    assert meta.is_chat_model and meta.context_window == (text_rcc.max_positions - 8) * 4
    assert RCCLLM().metadata.context_window == (8192 - 256) * 4  # the packaged default, from configs only
