"""RCCLLM on a tiny RCC with SmolLM2's tokenizer: real LlamaIndex objects, our own logic under test."""

import asyncio
import json

import pytest
from llama_index.core.base.llms.types import ChatMessage, MessageRole
from llama_index.core.callbacks import CallbackManager, TokenCountingHandler
from pydantic import BaseModel

from rcc_integrations.llama_index import RCCLLM
from rcc_model import UnsupportedSchemaError

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


def test_a_multi_rate_model_reads_at_the_rate_asked_for(text_rcc):
    text_rcc.config.rates = [4, 8]
    at4, at8 = (RCCLLM(model=text_rcc, rate=r, max_tokens=4, compress_threshold=64) for r in (None, 8))
    assert at8.metadata.context_window == 2 * at4.metadata.context_window
    slots4, slots8 = (llm.chat(messages()).raw["usage"]["memory_slots"] for llm in (at4, at8))
    assert slots8 < slots4

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


def test_a_prompt_as_long_as_the_context_window_is_accepted_its_end_kept_as_text(llm, text_rcc, prompts_read):
    from rcc_integrations._conversation import CONTINUED

    sentence = "The harbour master counted {} ships at the northern pier that morning.\n"
    lines, count = [], 0
    while count < llm.metadata.context_window:  # what LlamaIndex's prompt helper packs for this LLM
        lines.append(sentence.format(len(lines)))
        count += llm.engine.count_tokens(lines[-1])
    response = llm.complete("".join(lines) + "How many ships were counted last?")
    (slots, chat), = prompts_read
    assert chat[-1]["content"].startswith(CONTINUED) and chat[-1]["content"].endswith("counted last?")
    assert llm.engine.count_tokens(chat[-1]["content"]) <= 64 + llm.engine.count_tokens(CONTINUED)  # threshold
    assert 0 < slots == response.raw["usage"]["memory_slots"] <= llm.engine.read_budget(8)
    last = llm.chat([*messages(), ChatMessage(role=MessageRole.USER, content="".join(lines))])  # chat too
    assert prompts_read[-1][1][-1]["content"].startswith(CONTINUED) and last.raw["usage"]["memory_slots"] > 0


# ---------------------------------------------------------------------- ReActAgent steps
def lookup(city: str, year: int) -> str:
    """Population of a city in a year."""
    return f"{city} had 1200 people in {year}."


def react_messages(*turns: ChatMessage) -> list[ChatMessage]:
    from llama_index.core.agent.react.formatter import ReActChatFormatter
    from llama_index.core.tools import FunctionTool

    return ReActChatFormatter.from_defaults().format([FunctionTool.from_defaults(lookup)], list(turns), [])


def test_react_tools_are_read_from_the_react_header_only():
    from rcc_integrations.llama_index.react import react_tools

    tools = react_tools(react_messages()[0].content)
    assert list(tools) == ["lookup"] and tools["lookup"]["required"] == ["city", "year"]
    assert react_tools(LONG) is None


def test_the_decoder_reads_the_react_tools_without_the_headers_format_placeholders(text_rcc, monkeypatch):
    from rcc_integrations.llama_index import llm as llm_module

    read = []  # what the decoder would be prefilled with: the chat itself, through the patched prefill
    monkeypatch.setattr(text_rcc, "prefill_prompt", lambda memory, chat: chat)
    monkeypatch.setattr(llm_module, "react_step", lambda model, chat, *args: read.append(chat) or ("Thought: x", None))
    RCCLLM(model=text_rcc, max_tokens=8).chat(react_messages(ChatMessage(role="user", content="Who lives in Oslo?")))
    system = read[0][0]["content"]
    assert "lookup: lookup(city: str, year: int) -> str" in system and "Population of a city" in system
    assert "[your answer here" not in system and "hello world" not in system and "Output Format" not in system


def test_react_steps_parse_as_actions_with_schema_valid_input_then_as_answers(text_rcc):
    from llama_index.core.agent.react.output_parser import ReActOutputParser
    from llama_index.core.agent.react.types import ActionReasoningStep, ResponseReasoningStep

    llm = RCCLLM(model=text_rcc, max_tokens=8, compress_threshold=64, react_action_margin=float("inf"))
    question = ChatMessage(role=MessageRole.USER, content="How many people lived in Oslo in 1900?")
    response = llm.chat(react_messages(question))
    step = ReActOutputParser().parse(response.message.content)
    assert isinstance(step, ActionReasoningStep) and step.action == "lookup"
    assert isinstance(step.action_input["city"], str) and isinstance(step.action_input["year"], int)
    assert response.raw["usage"]["memory_slots"] == 0  # the long header stayed plain text
    observed = ChatMessage(role=MessageRole.USER, content="Observation: Oslo had 1200 people in 1900.")
    answer = llm.chat(react_messages(question, response.message, observed)).message.content
    assert isinstance(ReActOutputParser().parse(answer), ResponseReasoningStep)
    plain = RCCLLM(model=text_rcc, max_tokens=8, compress_threshold=64, react_guidance=False)
    assert plain.chat(react_messages(question)).message.content != response.message.content


def run_agent(agent) -> tuple[list, object]:
    """The agent's tool-call results and its final output for one question."""
    from llama_index.core.agent.workflow import ToolCallResult

    async def run():
        handler = agent.run(user_msg="How many people lived in Oslo in 1900?")
        calls = [e async for e in handler.stream_events() if isinstance(e, ToolCallResult)]
        return calls, await handler

    return asyncio.run(run())


def test_react_agent_calls_the_tool_and_answers(text_rcc):
    from llama_index.core.agent.workflow import ReActAgent

    llm = RCCLLM(model=text_rcc, max_tokens=8, compress_threshold=64, react_action_margin=float("inf"))
    calls, result = run_agent(ReActAgent(tools=[lookup], llm=llm))
    assert [c.tool_name for c in calls] == ["lookup"] and "people in" in str(calls[0].tool_output)
    assert isinstance(str(result), str)


def test_a_function_agent_calls_the_tool_then_answers_in_text(text_rcc):
    from llama_index.core.agent.workflow import FunctionAgent

    llm = RCCLLM(model=text_rcc, max_tokens=8)  # the default tool_call_margin: a call, then text
    assert llm.metadata.is_function_calling_model
    calls, result = run_agent(FunctionAgent(tools=[lookup], llm=llm))
    assert [c.tool_name for c in calls] == ["lookup"] and "people in" in str(calls[0].tool_output)
    assert {k: type(v) for k, v in calls[0].tool_kwargs.items()} == {"city": str, "year": int}
    assert result.tool_calls and not result.response.additional_kwargs.get("tool_calls")  # then text


def test_by_default_a_user_turn_with_tools_calls_one_even_where_the_model_favours_text(text_rcc, prefers_text):
    from llama_index.core.tools import FunctionTool

    tools = [FunctionTool.from_defaults(lookup)]
    response = RCCLLM(model=text_rcc, max_tokens=4).chat_with_tools(tools, "How many people lived in Oslo?")
    assert response.message.additional_kwargs["tool_calls"][0]["name"] == "lookup"


def test_chat_with_tools_required_always_calls_and_the_call_is_read_back_as_json(text_rcc, monkeypatch):
    from llama_index.core.tools import FunctionTool

    llm = RCCLLM(model=text_rcc, max_tokens=8)  # the default margin: a random model may not want a call
    tool = FunctionTool.from_defaults(lookup)
    response = llm.chat_with_tools([tool], user_msg="Oslo in 1900?", tool_required=True)
    (call,) = llm.get_tool_calls_from_response(response)
    assert call.tool_name == "lookup" and isinstance(call.tool_kwargs["year"], int)
    assert response.raw["finish_reason"] in ("tool_calls", "length")
    with pytest.raises(ValueError, match="expected a tool call"):
        llm.get_tool_calls_from_response(llm.chat([ChatMessage(role=MessageRole.USER, content="Hi")]))
    read = []  # the next turn's decoder input: the call written out as JSON before the tool's result
    monkeypatch.setattr(text_rcc, "prefill_prompt", lambda memory, chat: read.append(chat) or 1 / 0)
    history = [ChatMessage(role=MessageRole.USER, content="Oslo in 1900?"), response.message,
               ChatMessage(role=MessageRole.TOOL, content="1200", additional_kwargs={"tool_call_id": call.tool_id})]
    with pytest.raises(ZeroDivisionError):
        llm.chat_with_tools([tool], chat_history=history)
    assert json.loads(read[0][-2]["content"]) == {"name": "lookup", "arguments": call.tool_kwargs}


class Place(BaseModel):
    name: str
    founded: int | None


class Trip(BaseModel):
    destination: Place
    nights: int
    tags: list[str]


def test_structured_predict_always_returns_the_model_even_from_a_random_decoder(llm):
    from llama_index.core.prompts import PromptTemplate

    prompt = PromptTemplate("Plan a trip to {city}.")
    trip = llm.structured_predict(Trip, prompt, city="Oslo")
    assert isinstance(trip, Trip) and isinstance(trip.destination, Place)
    assert isinstance(asyncio.run(llm.astructured_predict(Trip, prompt, city="Oslo")), Trip)
    assert [type(t) for t in llm.stream_structured_predict(Trip, prompt, city="Oslo")] == [Trip]

    async def streamed() -> list:
        return [t async for t in await llm.astream_structured_predict(Trip, prompt, city="Oslo")]

    assert [type(t) for t in asyncio.run(streamed())] == [Trip]
    structured = llm.as_structured_llm(Trip).complete("Plan a trip to Oslo.")
    assert isinstance(structured.raw, Trip)
    before = llm.engine.compressions
    read = llm.structured_predict(Trip, PromptTemplate("Where to?"), llm_kwargs={"memory": [LONG]})
    assert isinstance(read, Trip) and llm.engine.compressions == before + 1  # the attached document was read


def test_structured_predict_honours_field_constraints_and_refuses_recursion(llm):
    from llama_index.core.prompts import PromptTemplate
    from pydantic import Field

    class Code(BaseModel):
        digits: str = Field(min_length=3, max_length=4, pattern=r"^[0-9]+$")
        tags: list[int] = Field(min_length=3, max_length=3)

    code = llm.structured_predict(Code, PromptTemplate("The code?"))
    assert code.digits.isdigit() and 3 <= len(code.digits) <= 4 and len(code.tags) == 3

    class Node(BaseModel):
        children: list["Node"]

    with pytest.raises(UnsupportedSchemaError, match="refers to itself"):
        llm.structured_predict(Node, PromptTemplate("A tree?"))


def test_structured_predict_refuses_a_schema_it_cannot_honour_before_running(llm):
    from llama_index.core.prompts import PromptTemplate

    class Pair(BaseModel):
        values: tuple[int, int]

    before = llm.engine.compressions
    with pytest.raises(ValueError, match="cannot constrain"):
        llm.structured_predict(Pair, PromptTemplate(LONG))
    assert llm.engine.compressions == before


def test_a_react_agent_gives_a_query_engine_tool_the_question_and_answers_from_its_result(text_rcc, monkeypatch):
    from llama_index.core.agent.workflow import ReActAgent
    from llama_index.core.tools import FunctionTool

    from rcc_integrations._conversation import ANSWER_FROM_RESULT

    def library(input: str) -> str:
        """Answers a question from the files."""
        return "Oslo had 1200 people in 1900."

    read = []
    prefill = text_rcc.prefill_prompt
    monkeypatch.setattr(text_rcc, "prefill_prompt", lambda memory, chat: read.append(chat) or prefill(memory, chat))
    calls, result = run_agent(ReActAgent(tools=[FunctionTool.from_defaults(library)],
                                         llm=RCCLLM(model=text_rcc, max_tokens=8)))  # the default margin: act
    assert [c.tool_kwargs for c in calls] == [{"input": "How many people lived in Oslo in 1900?"}]
    assert read[-1] == [{"role": "system", "content": ANSWER_FROM_RESULT},
                        {"role": "user", "content": "How many people lived in Oslo in 1900?"},
                        {"role": "assistant", "content": json.dumps({"name": "library", "arguments": {
                            "input": "How many people lived in Oslo in 1900?"}})},
                        {"role": "tool", "content": "Oslo had 1200 people in 1900."}]
    assert "\n" not in str(result).strip()  # the answer ends at its line: no steps leaked after it


def test_memory_given_to_the_llm_is_read_by_a_function_agent(text_rcc, prompts_read):
    from llama_index.core.agent.workflow import FunctionAgent

    run_agent(FunctionAgent(tools=[lookup], llm=RCCLLM(model=text_rcc, max_tokens=4, memory=[LONG])))
    assert prompts_read and prompts_read[0][0] > 0  # the call was written from what the memory holds
