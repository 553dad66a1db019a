"""`RCCLLM`: a LlamaIndex LLM over an RCC model; long messages and prompts are compressed, not truncated."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any, TypeVar

from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseAsyncGen,
    CompletionResponseGen,
    LLMMetadata,
    MessageRole,
)
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.llms.function_calling import FunctionCallingLLM
from llama_index.core.llms.llm import ToolSelection
from llama_index.core.prompts import BasePromptTemplate
from llama_index.core.tools import BaseTool
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from rcc_integrations._conversation import answering_from_result, plan, tools_prompt, with_tools
from rcc_integrations._runtime import (
    READ_ALIGNMENTS_HELP,
    SPLIT_QUESTIONS_HELP,
    TOOL_CALL_MARGIN_HELP,
    Engine,
    ModelLock,
    ToolCall,
    engine_for,
    iterate_in_thread,
    pop_sampling,
    reading_metadata,
)
from rcc_integrations.llama_index.react import as_tool_calls, react_brief, react_step, react_tools
from rcc_model import (
    CompressedMemory,
    GenerationInfo,
    MemoryWithText,
    RCCModel,
    SchemaDecoder,
    generate_json,
    text_only,
)

Model = TypeVar("Model", bound=BaseModel)

_ROLES = {MessageRole.SYSTEM: "system", MessageRole.DEVELOPER: "system", MessageRole.USER: "user",
          MessageRole.ASSISTANT: "assistant", MessageRole.CHATBOT: "assistant", MessageRole.MODEL: "assistant",
          MessageRole.TOOL: "tool", MessageRole.FUNCTION: "tool"}


class RCCLLM(FunctionCallingLLM):
    """LlamaIndex LLM over an RCC model: messages longer than `compress_threshold` tokens (and `memory=`
    attached documents or memories) are read through compressed memory, and so is the beginning of a last
    message too long for the decoder (its end, the question, stays text); `metadata.context_window` is the
    number of original tokens the decoder can cover that way, and a prompt that long is accepted.

    Example:
        .. code-block:: python

            from rcc_integrations.llama_index import RCCLLM

            llm = RCCLLM(max_tokens=128)               # the packaged default model, loaded on first use
            print(llm.complete(long_report + "\\n\\nWho signed it?"))
            for r in llm.stream_complete("Summarise: " + long_report):
                print(r.delta, end="")
            agent = FunctionAgent(tools=[lookup], llm=RCCLLM())  # a tool call, then a text answer
            agent = FunctionAgent(tools=[lookup], llm=RCCLLM(memory=[report]))  # reading a document too
    """

    model: Any = Field(default="default", description="packaged name, checkpoint folder, or an RCCModel")
    rate: int | None = Field(default=None, description="compression rate, one the model was trained at "
                             "(default: the model's; a multi-rate model reads several)")
    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    compress_threshold: int = 256
    instruction_reconstruction: bool = False
    memory_budget: int | None = Field(
        default=None, description="the most memory slots one answer reads; beyond it, the windows of the long "
        "texts that best match the question (BM25 over their text) are read. None = what the model was measured "
        "to read well (its config's read_slots), else all the decoder's positions hold")
    expand_tokens: int | None = Field(
        default=None, ge=0, description="the most tokens of the long texts' best-matching windows read as plain "
        "text before the question (the rest is read as slots). None = the model's expand_tokens; 0 = slots only")
    read_alignments: int | None = Field(default=None, ge=1, description=READ_ALIGNMENTS_HELP)
    split_questions: bool = Field(default=True, description=SPLIT_QUESTIONS_HELP)
    memory: Any = Field(default=None, description="what every call reads as memory (strings, CompressedMemory, "
                        "MemoryWithText), unless a call passes its own memory=: how an agent's LLM (FunctionAgent, "
                        "which passes no memory=) reads documents")
    tool_call_margin: float = Field(default=float("inf"), description=TOOL_CALL_MARGIN_HELP)
    react_guidance: bool = Field(default=True, description="write ReActAgent steps in their format by construction")
    react_action_margin: float = Field(default=float("inf"), description="nats in favour of calling a tool "
                                       "before any observation (and against, after one). The default, "
                                       "float('inf'): act first, answer once a tool has replied (the loop the "
                                       "packaged model runs dependably, like tool_call_margin); a finite margin "
                                       "(e.g. 2.0) lets the model's scores decide")

    model_config = ConfigDict(arbitrary_types_allowed=True)
    _engine: Engine | None = PrivateAttr(default=None)

    @classmethod
    def class_name(cls) -> str:
        return "RCCLLM"

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = engine_for(self.model, self.rate)
        return self._engine

    @property
    def metadata(self) -> LLMMetadata:
        if isinstance(self.model, RCCModel):
            rate, positions, name = self.model.config.rate, self.model.max_positions, self.model.config.base
        else:
            from rcc_model import describe

            facts = describe(self.model)
            rate, positions, name = facts["rate"], facts["max_positions"], str(self.model)
        rate = self.rate or rate
        return LLMMetadata(context_window=(positions - self.max_tokens) * rate, num_output=self.max_tokens,
                           is_chat_model=True, is_function_calling_model=True, model_name=name)

    def _lock(self) -> ModelLock:
        """The model's lock, which a stream left unread gives up to a waiting call (`iterate_in_thread`)."""
        return self.engine.lock

    # ------------------------------------------------------------------ one synchronous core
    def _responses(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        engine = self.engine
        turns = [(_ROLES.get(m.role, "user"), _rendered_text(m)) for m in messages]
        attached, schema = kwargs.pop("memory", self.memory), kwargs.pop("json_schema", None)
        functions, choice = kwargs.pop("tools", None), kwargs.pop("tool_choice", None)
        if schema is not None:  # refused before anything is compressed
            SchemaDecoder.check_schema(schema)
        pieces = list(attached) if isinstance(attached, (list, tuple)) else ([attached] if attached else [])
        if any(not isinstance(p, (str, CompressedMemory, MemoryWithText)) for p in pieces):
            raise TypeError("memory= takes strings, CompressedMemory or MemoryWithText objects")
        header = turns[0][1] if turns and turns[0][0] == "system" else ""
        tools = react_tools(header) if self.react_guidance and not self.instruction_reconstruction else None
        sampling = pop_sampling(kwargs, self, kwargs.pop("stop", None) or ())
        kwargs.pop("formatted", None)
        memory_budget = kwargs.pop("memory_budget", self.memory_budget)
        expand_tokens = kwargs.pop("expand_tokens", self.expand_tokens)
        budget = engine.read_budget(sampling["max_new_tokens"], memory_budget)
        if tools:  # ReActAgent: its header becomes a plain-text brief of the tools (see react_brief)
            brief = react_brief(header)
            conversation = plan(turns[1:], engine.count_tokens, self.compress_threshold, False, pieces,
                                engine.prompt_room(sampling["max_new_tokens"], budget, expand_tokens, brief))
            conversation.chat.insert(0, {"role": "system", "content": brief})
        else:
            described = tools_prompt(functions) if functions and choice != "none" and schema is None else ""
            conversation = plan(turns, engine.count_tokens, self.compress_threshold,
                                self.instruction_reconstruction, pieces,
                                engine.prompt_room(sampling["max_new_tokens"], budget, expand_tokens, described))
        calls_functions = bool(functions) and choice != "none" and conversation.question is None
        parts, read, created = engine.read(conversation, rate=self.rate, budget=budget, alignments=self.read_alignments,
                                           expand_tokens=expand_tokens,
                                           split=self.split_questions and schema is None and not tools
                                           and not calls_functions)
        info = GenerationInfo()
        part = parts[0]
        if schema is not None:
            stream = self._json(engine, part.memory, part.conversation.chat, schema, info, sampling)
        elif tools:
            asked = [text for role, text in turns[1:] if role == "user" and not text.startswith("Observation:")]
            stream = self._react(engine, part.memory, part.conversation.chat, tools,
                                 turns[-1][1].startswith("Observation:"), asked[-1] if asked else None, info, sampling)
        elif calls_functions:
            stream = engine.tool_call_or_text(part.memory, part.conversation.chat, functions, choice,
                                              turns[-1][0] == "tool", self.tool_call_margin, info, sampling)
            part.conversation.chat = with_tools(part.conversation.chat, functions)  # counted with the tools described
        else:
            stream = engine.answer_parts(parts, info, **sampling)
        text, calls = "", []
        for piece in stream:
            if isinstance(piece, ToolCall):
                calls.append({"id": piece.id, "name": piece.name, "arguments": piece.arguments})
                piece = ""
            text += piece
            yield ChatResponse(message=_assistant(text, calls), delta=piece)
        # every memory token given counts as prompt (read from cache or compressed now), read in full or not
        prompt_tokens = read + created + engine.chat_tokens(parts)
        reading = reading_metadata(parts)
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": info.output_tokens,
                 "total_tokens": prompt_tokens + info.output_tokens, "memory_tokens_read_from_cache": read,
                 "memory_tokens_compressed": created,
                 **{k: v for k, v in reading.items() if k != "memory_tokens"}}
        yield ChatResponse(message=_assistant(text, calls), delta="",
                           raw={"usage": usage, "finish_reason": info.finish_reason or "stop"})

    @staticmethod
    def _json(engine: Engine, memory: CompressedMemory, chat: list[dict[str, str]], schema: dict[str, Any],
              info: GenerationInfo, sampling: dict[str, Any]) -> Iterator[str]:
        """A JSON value for `schema`, valid by construction (`rcc_model.structured`), as one piece."""
        with engine.lock:
            value, cut = generate_json(engine.model, engine.model.prefill_prompt(memory, chat), schema,
                                       sampling["max_new_tokens"])
        text = json.dumps(value)
        info.output_tokens, info.finish_reason = engine.count_tokens(text), "length" if cut else "stop"
        yield text

    def _react(self, engine: Engine, memory: CompressedMemory, chat: list[dict[str, str]],
               tools: dict[str, dict[str, Any]], observed: bool, question: str | None, info: GenerationInfo,
               sampling: dict[str, Any]) -> Iterator[str]:
        """One ReActAgent step in its format (see `react.py`): a complete action, or a streamed answer, which
        ends at its line's end: the small model ran on into steps of its own ("Action: ...") after it. An
        answer after an observation is the base decoder's, reading the steps as tool calls and told to answer
        from the result (as `Engine.tool_call_or_text` answers after a tool result)."""
        bias = -self.react_action_margin if observed else self.react_action_margin
        with engine.lock:
            text, rest = react_step(engine.model, engine.model.prefill_prompt(memory, chat), tools, bias,
                                    sampling["max_new_tokens"], question)
            if rest is not None and observed:
                text += " "  # the answer starts a turn of its own, where no space leads it
                # the steps without the brief: beside it, the base decoder told what it knew of a name in the result
                answering = answering_from_result(as_tool_calls(chat[1:]))
                rest = text_only(engine.model.prefill_prompt(engine.model.empty_memory(), answering),
                                 engine.model.tokenizer)
        yield text
        if rest is not None:
            yield from engine.stream(rest, None, info=info, **{**sampling, "stop": ["\n", *sampling["stop"]]})
        info.output_tokens += engine.count_tokens(text)
        info.finish_reason = info.finish_reason or "stop"

    # ------------------------------------------------------------------ chat
    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        *_, last = self._responses(messages, **kwargs)
        return last

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        return self._responses(messages, **kwargs)

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        last = None
        async for last in iterate_in_thread(lambda: self._responses(messages, **kwargs), self._lock):  # noqa: B007
            pass
        return last

    @llm_chat_callback()
    async def astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseAsyncGen:
        return iterate_in_thread(lambda: self._responses(messages, **kwargs), self._lock)

    # ------------------------------------------------------------------ function calling
    def _prepare_chat_with_tools(self, tools: Sequence[BaseTool], user_msg: str | ChatMessage | None = None,
                                 chat_history: list[ChatMessage] | None = None, verbose: bool = False,
                                 allow_parallel_tool_calls: bool = False, tool_required: bool = False,
                                 **kwargs: Any) -> dict[str, Any]:
        """`chat` arguments for `chat_with_tools` (what `FunctionAgent` calls): one call per turn at most,
        written by schema-constrained decoding; `tool_required` makes it certain, else `tool_call_margin`
        decides."""
        messages = list(chat_history or [])
        if user_msg is not None:
            messages.append(ChatMessage(role=MessageRole.USER, content=user_msg) if isinstance(user_msg, str)
                            else user_msg)
        functions = [tool.metadata.to_openai_tool() for tool in tools]
        for function in functions:  # refuse a schema that constrained decoding cannot honour, now
            SchemaDecoder.check_schema(function["function"].get("parameters", {"type": "object"}))
        return {"messages": messages, "tools": functions, "tool_choice": "any" if tool_required else None, **kwargs}

    def get_tool_calls_from_response(self, response: ChatResponse, error_on_no_tool_call: bool = True,
                                     **kwargs: Any) -> list[ToolSelection]:
        calls = response.message.additional_kwargs.get("tool_calls", [])
        if not calls and error_on_no_tool_call:
            raise ValueError(f"expected a tool call, got text: {(response.message.content or '')[:80]!r}")
        return [ToolSelection(tool_id=c["id"], tool_name=c["name"], tool_kwargs=c["arguments"]) for c in calls]

    # ------------------------------------------------------------------ structured output
    def structured_predict(self, output_cls: type[Model], prompt: BasePromptTemplate,
                           llm_kwargs: dict[str, Any] | None = None, **prompt_args: Any) -> Model:
        """An `output_cls` written by JSON-schema-constrained decoding: it always parses and validates, where
        LlamaIndex's default (ask for JSON, then parse) fails with a small model. `max_tokens` caps the values
        (see `RCCModel.generate_json`); `llm_kwargs` go to `chat` (e.g. `memory=[...]`).

        Example:
            .. code-block:: python

                person = llm.structured_predict(Person, PromptTemplate("Who signed it? {text}"), text=report)
        """
        response = self.chat(prompt.format_messages(**prompt_args), json_schema=_checked_schema(output_cls),
                             **(llm_kwargs or {}))
        return output_cls.model_validate_json(response.message.content)

    async def astructured_predict(self, output_cls: type[Model], prompt: BasePromptTemplate,
                                  llm_kwargs: dict[str, Any] | None = None, **prompt_args: Any) -> Model:
        response = await self.achat(prompt.format_messages(**prompt_args), json_schema=_checked_schema(output_cls),
                                    **(llm_kwargs or {}))
        return output_cls.model_validate_json(response.message.content)

    def stream_structured_predict(self, output_cls: type[Model], prompt: BasePromptTemplate,
                                  llm_kwargs: dict[str, Any] | None = None, **prompt_args: Any) -> Iterator[Model]:
        """The finished object, once: a value is only known valid when its JSON is complete."""
        yield self.structured_predict(output_cls, prompt, llm_kwargs, **prompt_args)

    async def astream_structured_predict(self, output_cls: type[Model], prompt: BasePromptTemplate,
                                         llm_kwargs: dict[str, Any] | None = None, **prompt_args: Any
                                         ) -> AsyncIterator[Model]:
        async def one() -> AsyncIterator[Model]:
            yield await self.astructured_predict(output_cls, prompt, llm_kwargs, **prompt_args)

        return one()

    # ------------------------------------------------------------------ completion (a one-message chat)
    def _completions(self, prompt: str, **kwargs: Any) -> CompletionResponseGen:
        for response in self._responses([ChatMessage(role=MessageRole.USER, content=prompt)], **kwargs):
            yield CompletionResponse(text=response.message.content or "", delta=response.delta, raw=response.raw)

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        *_, last = self._completions(prompt, **kwargs)
        return last

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        return self._completions(prompt, **kwargs)

    @llm_completion_callback()
    async def acomplete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        last = None
        async for last in iterate_in_thread(lambda: self._completions(prompt, **kwargs), self._lock):  # noqa: B007
            pass
        return last

    @llm_completion_callback()
    async def astream_complete(self, prompt: str, formatted: bool = False,
                               **kwargs: Any) -> CompletionResponseAsyncGen:
        return iterate_in_thread(lambda: self._completions(prompt, **kwargs), self._lock)


def _checked_schema(output_cls: type[BaseModel]) -> dict[str, Any]:
    """The class's JSON schema, refused before anything runs if constrained decoding cannot honour it."""
    schema = output_cls.model_json_schema()
    SchemaDecoder.check_schema(schema)
    return schema


def _assistant(text: str, calls: list[dict[str, Any]]) -> ChatMessage:
    return ChatMessage(role=MessageRole.ASSISTANT, content=text,
                       additional_kwargs={"tool_calls": calls} if calls else {})


def _rendered_text(message: ChatMessage) -> str:
    """What the decoder reads of a message: an assistant's tool calls are written out as the JSON it produces
    them in, so a conversation with tool results reads like the calls that led to them."""
    calls = [json.dumps({"name": c["name"], "arguments": c["arguments"]})
             for c in message.additional_kwargs.get("tool_calls", []) if "name" in c]
    return "\n".join([message.content, *calls] if message.content else calls)
