"""RCCChatModel on a tiny RCC with SmolLM2's tokenizer: real LangChain objects, our own logic under test."""

import asyncio

import pytest
from langchain_core.documents import Document
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

from rcc_integrations.langchain import ChatRCC, RCCChatModel
from rcc_model import MemoryMismatchError, UnsupportedSchemaError
from tests.conftest import make_rcc
from tests.unit.test_text_generation import scripted

LONG = "The lighthouse keeper wrote the date in the log every evening before supper. " * 20


@pytest.fixture()
def llm(text_rcc):
    return RCCChatModel(model=text_rcc, max_tokens=8, compress_threshold=64)


def test_invoke_returns_text_usage_and_metadata(llm):
    message = llm.invoke([SystemMessage(LONG), HumanMessage("When did he write?")])
    assert isinstance(message, AIMessage) and isinstance(message.content, str)
    usage = message.usage_metadata
    assert usage["output_tokens"] > 0 and usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    assert usage["input_tokens"] > llm.engine.count_tokens(LONG)  # counted as the original tokens
    assert message.response_metadata["memory_slots"] > 0 and message.response_metadata["compression_rate"] == 4
    assert message.response_metadata["finish_reason"] in ("stop", "length")


def test_a_multi_rate_model_answers_at_the_rate_asked_for(text_rcc):
    text_rcc.config.rates = [4, 8]
    chat = [SystemMessage(LONG), HumanMessage("When did he write?")]
    at4, at8 = (RCCChatModel(model=text_rcc, rate=r, max_tokens=4, compress_threshold=64).invoke(chat)
                for r in (None, 8))
    assert (at4.response_metadata["compression_rate"], at8.response_metadata["compression_rate"]) == (4, 8)
    assert at8.response_metadata["memory_slots"] < at4.response_metadata["memory_slots"]
    assert at8.usage_metadata["input_tokens"] == at4.usage_metadata["input_tokens"]  # the same text, read
    with pytest.raises(ValueError, match="trained at rate 4/8, not 16"):
        RCCChatModel(model=text_rcc, rate=16).invoke("Hello")

def test_a_document_reused_across_calls_is_compressed_once(llm):
    before = llm.engine.compressions
    first = llm.invoke([SystemMessage(LONG), HumanMessage("Q1")])
    second = llm.invoke([SystemMessage(LONG), HumanMessage("Q2")])
    assert llm.engine.compressions == before + 1
    assert first.usage_metadata["input_token_details"]["cache_creation"] > 0
    assert second.usage_metadata["input_token_details"]["cache_read"] == first.usage_metadata[
        "input_token_details"]["cache_creation"]


def test_a_memory_store_keeps_compressed_memory_beyond_the_process_cache(text_rcc):
    from langchain_core.stores import InMemoryByteStore

    store = InMemoryByteStore()
    llm = RCCChatModel(model=text_rcc, max_tokens=8, compress_threshold=64, memory_store=store)
    document = "The ferry leaves at dawn from the northern pier. " * 30
    first = llm.invoke([SystemMessage(document), HumanMessage("When?")])
    assert len(list(store.yield_keys(prefix="rcc-memory/"))) == 1
    llm.engine._cache.clear()  # a new process: only the store remembers
    before = llm.engine.compressions
    second = llm.invoke([SystemMessage(document), HumanMessage("When?")])
    assert llm.engine.compressions == before and second.content == first.content
    assert second.usage_metadata["input_token_details"]["cache_read"] > 0
    (key,) = store.yield_keys(prefix="rcc-memory/")
    store.mset([(key, b"damaged")])
    llm.engine._cache.clear()
    with pytest.warns(UserWarning, match="unusable"):
        third = llm.invoke([SystemMessage(document), HumanMessage("When?")])
    assert llm.engine.compressions == before + 1 and third.content == first.content
    assert store.mget([key])[0] != b"damaged"  # overwritten with a good entry


def test_short_messages_stay_plain_text(llm):
    before = llm.engine.compressions
    message = llm.invoke("Hello there")
    assert llm.engine.compressions == before and message.response_metadata["memory_slots"] == 0


def test_a_last_message_longer_than_the_decoder_holds_is_read_from_memory_but_its_question(llm, text_rcc,
                                                                                         prompts_read):
    from rcc_integrations._conversation import CONTINUED

    document, question = LONG * 8, "When did the keeper write the date?"
    assert llm.engine.count_tokens(document) > text_rcc.max_positions
    message = llm.invoke([SystemMessage("Answer briefly."), HumanMessage(f"{document}\n\n{question}")])
    (slots, chat), = prompts_read
    assert chat[-1]["content"] == f"{CONTINUED}\n\n{question}"  # the question stays text, the document memory
    assert chat[0]["content"] == "Answer briefly." and 0 < slots == message.response_metadata["memory_slots"]
    assert message.usage_metadata["input_tokens"] >= llm.engine.count_tokens(document)


@pytest.mark.parametrize(("text", "limit", "tail"), [
    ("A long document.\n\nIts second paragraph.\n\nThe question?", 6, "The question?"),  # a paragraph
    ("One sentence. Another one. The question?", 5, "The question?"),  # else a sentence
    ("averyveryveryverylongword", 2, None),  # else characters: the longest end that fits
])
def test_a_message_is_cut_at_the_best_boundary_whose_end_fits(text, limit, tail, text_rcc):
    from rcc_integrations._conversation import split_tail

    count = text_rcc.encode_text
    head, end = split_tail(text + "  \n", lambda t: len(count(t)), limit)
    assert head + end == text and head.strip() and len(count(end)) <= limit
    assert end == tail if tail else len(count(text[len(head) - 1:])) > limit


def test_stream_equals_invoke_and_carries_usage_once(llm):
    messages = [SystemMessage(LONG), HumanMessage("When?")]
    chunks = list(llm.stream(messages))
    assert "".join(c.content for c in chunks) == llm.invoke(messages).content
    assert sum(c.usage_metadata is not None for c in chunks) == 1
    assert chunks[-1].chunk_position == "last"


def test_concurrent_ainvoke_calls_are_all_correct(llm):
    questions = [f"Question number {i}?" for i in range(4)]
    expected = [llm.invoke([SystemMessage(LONG), HumanMessage(q)]).content for q in questions]

    async def ask_all():
        return await asyncio.gather(*[llm.ainvoke([SystemMessage(LONG), HumanMessage(q)]) for q in questions])

    assert [m.content for m in asyncio.run(ask_all())] == expected


def test_astream_equals_stream(llm):
    async def collect():
        return [c.content async for c in llm.astream("Tell me")]

    assert "".join(asyncio.run(collect())) == "".join(c.content for c in llm.stream("Tell me"))


def test_attached_documents_and_memories_are_read(llm, text_rcc):
    doc = Document(page_content=LONG)
    by_document = llm.invoke("When?", memory=[doc])
    by_memory = llm.invoke("When?", memory=text_rcc.compress(LONG))
    assert by_document.content == by_memory.content and by_document.response_metadata["memory_slots"] > 0


def test_beyond_the_memory_budget_the_windows_matching_the_question_are_read(text_rcc, monkeypatch):
    slots = text_rcc.config.window // text_rcc.config.rate
    report = LONG + "The harbour code is kept by Amara Quist. " + LONG
    llm = RCCChatModel(model=text_rcc, max_tokens=4, memory_budget=2 * slots)
    meta = llm.invoke("Who keeps the harbour code?", memory=[Document(page_content=report)]).response_metadata
    message = llm.invoke("Who keeps the harbour code?", memory=[Document(page_content=report)])
    assert meta["memory_slots"] == 2 * slots and meta["memory_windows_read"] == 2
    details = message.usage_metadata["input_token_details"]  # all memory given counts, read or not
    assert message.usage_metadata["input_tokens"] >= details["cache_read"] == text_rcc.compress(report).token_count
    assert meta["memory_windows"] == text_rcc.compress(report).num_windows > 2
    given = text_rcc.compress(report, keep_text=False)  # without its text it cannot be ranked: read whole
    assert llm.invoke("Who?", memory=given).response_metadata["memory_slots"] == given.num_slots
    question_last = RCCChatModel(model=text_rcc, max_tokens=4, memory_budget=slots, instruction_reconstruction=True)
    recalls_a_question(text_rcc, monkeypatch)
    meta = question_last.invoke([SystemMessage(report), HumanMessage("Who keeps the harbour code?")]
                                ).response_metadata
    question_slots = text_rcc.compress("\n\nWho keeps the harbour code?").num_slots
    assert meta["memory_slots"] == slots + question_slots  # the compressed question is always read


def test_memory_from_another_model_is_refused(llm):
    other = make_rcc(window=32)
    with pytest.raises((MemoryMismatchError, ValueError)):
        llm.invoke("When?", memory=other.compress(list(range(20))))


def test_bad_input_is_a_clear_error(llm):
    with pytest.raises(ValueError, match="at least one message"):
        llm.invoke([])
    image = HumanMessage(content=[{"type": "image", "url": "file://x.png"}])
    with pytest.raises(ValueError, match="'image' content block"):
        llm.invoke([image])
    with pytest.raises(TypeError, match="unexpected arguments"):
        llm.invoke("hi", frequency_penalty=1.0)


def test_identity_and_tokens(llm, text_rcc):
    assert ChatRCC is RCCChatModel and llm._llm_type == "rcc"
    assert llm._get_ls_params()["ls_provider"] == "rcc"
    assert llm.get_token_ids("hello world") == text_rcc.encode_text("hello world")
    assert RCCChatModel(temperature=0.5)._identifying_params != RCCChatModel()._identifying_params


def test_construction_is_instant_and_loads_nothing():
    llm = RCCChatModel()
    assert llm._engine is None


def recalls_a_question(model, monkeypatch) -> None:
    """Make the random decoder recall a question and answer it, as instruction reconstruction expects."""
    script = model.encode_text("When?<|im_end|>\n<|im_start|>assistant\nAt dawn.<|im_end|>")
    monkeypatch.setattr("rcc_model.generation.decode_tokens", scripted(script))


def test_instruction_reconstruction_mode_compresses_the_question(text_rcc, monkeypatch):
    llm = RCCChatModel(model=text_rcc, max_tokens=8, instruction_reconstruction=True)
    recalls_a_question(text_rcc, monkeypatch)
    before = llm.engine.compressions
    message = llm.invoke([SystemMessage(LONG), HumanMessage("When?")])
    assert llm.engine.compressions == before + 2  # the document and the question
    assert isinstance(message.content, str) and message.usage_metadata["input_tokens"] > 0
    with pytest.raises(ValueError, match="user's question"):
        llm.invoke([HumanMessage("Q"), AIMessage("A")])


def get_weather(city: str, days: int) -> str:
    """Weather forecast for a city."""
    return f"sunny in {city} for {days} days"


def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def test_forced_tool_calls_are_valid_by_construction(llm):
    bound = llm.bind_tools([get_weather, add], tool_choice="any")
    message = bound.invoke("What is the weather in Paris for 3 days?", max_tokens=256)
    assert len(message.tool_calls) == 1
    call = message.tool_calls[0]
    assert call["name"] in ("get_weather", "add") and call["id"].startswith("call_")
    expected = {"get_weather": {"city": str, "days": int}, "add": {"a": int, "b": int}}[call["name"]]
    assert {k: type(v) for k, v in call["args"].items()} == expected
    assert message.response_metadata["finish_reason"] == "tool_calls"


def test_max_tokens_cuts_tool_arguments_short_and_says_so(llm, text_rcc):
    message = llm.bind_tools([get_weather], tool_choice="any").invoke("Weather in Paris?")  # max_tokens=8
    args = message.tool_calls[0]["args"]
    assert isinstance(args["city"], str) and isinstance(args["days"], int)
    assert len(text_rcc.encode_text(args["city"])) <= 8  # a random model would write 64 tokens
    assert message.response_metadata["finish_reason"] == "length"


def test_by_default_a_user_turn_with_tools_calls_one_even_where_the_model_favours_text(text_rcc, prefers_text):
    def lookup(city: str) -> str:
        """Look up facts about a city."""
        return city

    question = HumanMessage("Tell me about Oslo.")
    assert RCCChatModel(model=text_rcc, max_tokens=4).bind_tools([lookup]).invoke([question]).tool_calls
    assert not RCCChatModel(model=text_rcc, max_tokens=4, tool_call_margin=2.0).bind_tools([lookup]).invoke(
        [question]).tool_calls  # a finite margin lets such a model answer in text


def test_a_named_tool_choice_is_honoured(llm):
    message = llm.bind_tools([get_weather, add], tool_choice="add").invoke("hello")
    assert message.tool_calls[0]["name"] == "add"
    with pytest.raises(ValueError, match="not one of the bound tools"):
        llm.bind_tools([add], tool_choice="multiply")


def test_after_a_tool_result_auto_answers_in_text(llm):
    from langchain_core.messages import ToolMessage

    history = [HumanMessage("Weather in Paris?"),
               AIMessage("", tool_calls=[{"name": "get_weather", "args": {"city": "Paris", "days": 1}, "id": "c1"}]),
               ToolMessage("sunny", tool_call_id="c1")]
    message = llm.bind_tools([get_weather]).invoke(history)
    assert message.tool_calls == [] and isinstance(message.content, str)
    assert not message.content.lstrip().startswith("{")  # text, not a call imitated as text


def test_structured_output_returns_a_validated_object(llm):
    from pydantic import BaseModel

    class Person(BaseModel):
        name: str
        age: int

    person = llm.with_structured_output(Person).invoke("Alice is 30.")
    assert isinstance(person, Person)
    raw = llm.with_structured_output(Person, include_raw=True).invoke("Alice is 30.")
    assert raw["parsing_error"] is None and isinstance(raw["parsed"], Person)


def test_a_tool_schema_that_cannot_be_honoured_is_refused(llm):
    tool = {"type": "function", "function": {"name": "f", "description": "d",
                                             "parameters": {"type": "object", "properties": {"x": {"type": "set"}}}}}
    with pytest.raises(ValueError, match="cannot constrain"):
        llm.bind_tools([tool])


def test_structured_output_honours_every_field_constraint(llm):
    from pydantic import BaseModel, Field

    class Report(BaseModel):
        flags: list[bool] = Field(min_length=10)
        code: str = Field(max_length=2, pattern=r"^[0-9]+$")
        population: int = Field(ge=1_000_000)
        score: float = Field(gt=-5, lt=-2)

    report = llm.with_structured_output(Report).invoke("Report the numbers.")  # validated by pydantic
    assert len(report.flags) >= 10 and report.code.isdigit() and report.population >= 1_000_000


@pytest.mark.parametrize(("constraint", "keyword"), [({"multiple_of": 3}, "'multipleOf'"),
                                                     ({"le": -1, "ge": 1}, "no integer")])
def test_structured_output_refuses_at_bind_time_what_it_cannot_honour(llm, constraint, keyword):
    from pydantic import Field, create_model

    odd = create_model("Odd", n=(int, Field(**constraint)))
    with pytest.raises(UnsupportedSchemaError, match=keyword):
        llm.with_structured_output(odd)
    with pytest.raises(UnsupportedSchemaError, match=keyword):
        llm.bind_tools([odd])


def test_a_create_agent_tool_loop_runs_to_a_text_answer(text_rcc):
    from langchain.agents import create_agent
    from langchain_core.messages import ToolMessage

    calls = []

    def lookup(city: str) -> str:
        """Look up facts about a city."""
        calls.append(city)
        return f"{city} has a harbour."

    llm = RCCChatModel(model=text_rcc, max_tokens=8)  # the default tool_call_margin: a call, then text
    agent = create_agent(llm, tools=[lookup])
    result = agent.invoke({"messages": [HumanMessage("Tell me about Oslo.")]})
    kinds = [type(m).__name__ for m in result["messages"]]
    assert kinds == ["HumanMessage", "AIMessage", "ToolMessage", "AIMessage"]
    assert len(calls) == 1 and isinstance(result["messages"][2], ToolMessage)
    assert result["messages"][-1].tool_calls == []


def test_the_windows_read_are_decoded_at_the_models_slot_alignments(text_rcc, monkeypatch):
    from rcc_model import MemoryWithText, aligned_views, read_within

    monkeypatch.setattr(text_rcc.config, "read_alignments", 2)
    realign, seen = aligned_views, []
    monkeypatch.setattr("rcc_integrations._runtime.aligned_views", lambda model, memory, texts, alignments=None:
                        seen.append(list(texts)) or realign(model, memory, texts, alignments))
    slots = text_rcc.config.window // text_rcc.config.rate
    report, question = LONG + "The harbour code is kept by Amara Quist. " + LONG, "Who keeps the harbour code?"
    llm = RCCChatModel(model=text_rcc, max_tokens=4, memory_budget=slots)
    meta = llm.invoke(question, memory=[Document(page_content=report)]).response_metadata
    reading = read_within(question, [text_rcc.compress(report)], [text_rcc.window_texts(report)], slots)
    assert seen == [reading.texts] and len(reading.texts) == 1 and "harbour" in reading.texts[0]
    assert meta["memory_slots"] == slots  # the stored memory read; its other alignment is decoded beside it
    assert meta["memory_alignments"] == 2
    bare = llm.invoke(question, memory=text_rcc.compress(report, keep_text=False))  # without its text: one alignment
    assert len(seen) == 1 and bare.response_metadata["memory_alignments"] == 1
    stored = MemoryWithText(text_rcc.compress(report), text_rcc.window_texts(report))
    llm.invoke(question, memory=stored)  # with its text: ranked and realigned like the document itself
    assert seen[1] == reading.texts
    llm.invoke(question, memory=text_rcc.compress(report))  # a memory that keeps its own text (the default)
    assert seen[2] == reading.texts
    llm.model_copy(update={"read_alignments": 1}).invoke(question, memory=[Document(page_content=report)])
    assert len(seen) == 3
    with pytest.raises(ValueError, match="window texts"):
        MemoryWithText(stored.memory, stored.texts[1:])


def test_a_rate_with_weights_of_its_own_answers_with_them(rate_weights_checkpoint):
    folder, fingerprints = rate_weights_checkpoint
    llm = ChatRCC(model=folder, rate=8, max_tokens=4, compress_threshold=16)
    assert llm.engine.model.fingerprint == fingerprints[8]
    assert ChatRCC(model=folder).engine.model.fingerprint == fingerprints[4]
    message = llm.invoke([SystemMessage(LONG), HumanMessage("When did he write?")])
    assert message.response_metadata["compression_rate"] == 8



def test_tools_are_described_as_signatures_not_json_schemas():
    from langchain_core.utils.function_calling import convert_to_openai_tool

    from rcc_integrations._conversation import tools_prompt

    prompt = tools_prompt([convert_to_openai_tool(get_weather)])
    assert "- get_weather(city: string, days: integer): Weather forecast for a city." in prompt
    assert "properties" not in prompt  # no schema text for a small model to copy into its arguments


@pytest.fixture()
def prefills(text_rcc, monkeypatch) -> list[tuple[int, list[dict[str, str]]]]:
    """(memory slots, chat) of every prefill before a tool call or an answer after a tool's result."""
    seen: list[tuple[int, list[dict[str, str]]]] = []
    prefill = text_rcc.prefill_prompt
    monkeypatch.setattr(text_rcc, "prefill_prompt",
                        lambda memory, chat: seen.append((memory.num_slots, chat)) or prefill(memory, chat))
    return seen


def test_a_call_is_written_by_the_base_decoder_from_what_the_memory_decoder_recalls(text_rcc, prefills,
                                                                                     monkeypatch):
    from rcc_integrations._conversation import IN_MEMORY

    recalled = []  # the memory-reading decoder's answer to the question, on the chat without the tools
    monkeypatch.setattr(text_rcc, "stream", lambda memory, chat, **kw: recalled.append((memory.num_slots, chat))
                        or iter(["The code is 48213."]))
    message = RCCChatModel(model=text_rcc, max_tokens=8).bind_tools([add]).invoke(
        [SystemMessage(LONG), HumanMessage("What is the code plus 7?")])
    assert message.tool_calls and message.content == ""
    (slots, chat), = recalled
    assert slots > 0 and chat[-1]["content"] == "What is the code plus 7?" and IN_MEMORY in chat[0]["content"]
    assert "add(a: integer, b: integer)" not in chat[0]["content"]
    (slots, chat), = prefills
    assert slots == 0 and "add(a: integer, b: integer)" in chat[0]["content"]
    assert chat[-1]["content"] == "The code is 48213.\n\nWhat is the code plus 7?"


def test_after_a_tool_result_the_base_decoder_answers_told_to_answer_from_it(text_rcc, prefills):
    from langchain_core.messages import ToolMessage

    from rcc_integrations._conversation import ANSWER_FROM_RESULT

    history = [SystemMessage(LONG), HumanMessage("What is the code plus 7?"),
               AIMessage("", tool_calls=[{"name": "add", "args": {"a": 48213, "b": 7}, "id": "c1"}]),
               ToolMessage("48220", tool_call_id="c1")]
    RCCChatModel(model=text_rcc, max_tokens=4).bind_tools([add]).invoke(history)
    (slots, chat), = prefills
    assert slots == 0 and chat[0]["content"].endswith(ANSWER_FROM_RESULT)
    assert chat[-1] == {"role": "tool", "content": "48220"}


def test_memory_given_to_the_model_is_kept_where_an_agent_binds_its_tools(text_rcc, prompts_read):
    from langchain.agents import create_agent

    llm = RCCChatModel(model=text_rcc, max_tokens=4, memory=[Document(page_content=LONG)])
    create_agent(llm, tools=[add]).invoke({"messages": [HumanMessage("What is the code plus 7?")]})
    assert prompts_read and prompts_read[0][0] > 0  # the call was written from what the memory holds
    assert llm._identifying_params["memory"] != RCCChatModel(model=text_rcc)._identifying_params["memory"]
