"""`RCCChatModel` (alias `ChatRCC`): a LangChain chat model that reads long context through RCC memory."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.language_models.base import LangSmithParams
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import ConfigDict, Field, PrivateAttr

from rcc_integrations._conversation import tools_prompt, with_tools
from rcc_integrations._runtime import (
    READ_ALIGNMENTS_HELP,
    SPLIT_QUESTIONS_HELP,
    TOOL_CALL_MARGIN_HELP,
    CachedEmbedding,
    Engine,
    ToolCall,
    engine_for,
    iterate_in_thread,
    pop_sampling,
    reading_metadata,
)
from rcc_integrations.langchain.messages import memory_key, split_messages
from rcc_model import GenerationInfo, RCCModel, SchemaDecoder


class RCCChatModel(BaseChatModel):
    """Chat model over an RCC model: long messages and attached documents are compressed into memory
    (cached by content), the latest question stays plain text, and the decoder answers with a KV cache
    `rate` times smaller than the text.

    Weights load on first use and are shared by every instance naming the same model.

    Example:
        .. code-block:: python

            from langchain_core.documents import Document
            from rcc_integrations.langchain import ChatRCC

            llm = ChatRCC(max_tokens=128)                     # the packaged default model
            llm.invoke("Hello!")
            report = Document(page_content=open("report.txt").read())
            llm.invoke("Who signed the report?", memory=[report])   # compressed once, cached
            agent = create_agent(ChatRCC(memory=[report]), tools=[...])  # every call of the agent reads it
            llm = ChatRCC(rate=8)  # the default's own r = 8 weights: memory 8x smaller than text, recall lower
            llm = ChatRCC(memory_budget=1024)  # read at most 1,024 slots: the windows that best match the question
            llm = ChatRCC(read_alignments=1)   # decode from the stored memory alone: sooner, codes less exact
            llm = ChatRCC(expand_tokens=0)     # read attached texts as slots only (no window as plain text)
            llm = ChatRCC(embeddings=HuggingFaceEmbeddings())  # rank windows by meaning too, fused with BM25
            llm = ChatRCC(memory_store=store)  # any ByteStore (LocalFileStore, Redis...): memory outlives the process
            for chunk in llm.stream([("system", long_text), ("human", "Summarise it.")]):
                print(chunk.content, end="")
    """

    model: Any = Field(default="default", description="packaged name, checkpoint folder, or an RCCModel")
    rate: int | None = Field(default=None, description="compression rate, one the model was trained at "
                             "(default: the model's; a multi-rate model reads several)")
    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] | None = None
    compress_threshold: int = Field(default=256, description="messages longer than this (tokens) become memory")
    instruction_reconstruction: bool = Field(
        default=False, description="compress the question too; the decoder recalls it from memory (the paper)")
    tool_call_margin: float = Field(default=float("inf"), description=TOOL_CALL_MARGIN_HELP)
    memory_budget: int | None = Field(
        default=None, description="the most memory slots one answer reads; beyond it, the windows of the attached "
        "texts that best match the question (BM25 over their text) are read. None = what the model was measured "
        "to read well (its config's read_slots), else all the decoder's positions hold")
    expand_tokens: int | None = Field(
        default=None, ge=0, description="the most tokens of the attached texts' best-matching windows read as "
        "plain text before the question (the rest is read as slots). None = the model's expand_tokens; 0 = slots "
        "only")
    embeddings: Any = Field(
        default=None, description="LangChain Embeddings that rank the windows of attached texts together with "
        "BM25 (reciprocal-rank fusion), so a question worded unlike the text still finds it; None = BM25 alone")
    read_alignments: int | None = Field(default=None, ge=1, description=READ_ALIGNMENTS_HELP)
    split_questions: bool = Field(default=True, description=SPLIT_QUESTIONS_HELP)
    memory: Any = Field(
        default=None, description="what every call reads as memory (Documents, strings, CompressedMemory, "
        "MemoryWithText, .rccmem paths), unless a call passes its own memory=; a field, not bind(memory=...), "
        "keeps it where an agent binds tools to the model (langchain's create_agent rebinds the bare model)")
    memory_store: Any = Field(
        default=None, description="a LangChain ByteStore (e.g. langchain-classic's LocalFileStore) keeping "
        "compressed memory across processes, keyed by model fingerprint and text hash; the in-process cache is "
        "always on")

    model_config = ConfigDict(arbitrary_types_allowed=True)
    _engine: Engine | None = PrivateAttr(default=None)
    _embed: tuple[Any, CachedEmbedding] | None = PrivateAttr(default=None)

    @property
    def _llm_type(self) -> str:
        return "rcc"

    @property
    def model_name(self) -> str:
        return self.model if isinstance(self.model, str) else f"RCCModel({self.model.config.base})"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        model = self.model if isinstance(self.model, str) else self.model.fingerprint
        return {"model": str(model), "rate": self.rate, "max_tokens": self.max_tokens, "temperature": self.temperature,
                "top_p": self.top_p, "seed": self.seed, "stop": self.stop,
                "compress_threshold": self.compress_threshold,
                "instruction_reconstruction": self.instruction_reconstruction,
                "tool_call_margin": self.tool_call_margin, "memory_budget": self.memory_budget,
                "expand_tokens": self.expand_tokens, "read_alignments": self.read_alignments,
                "memory": memory_key(self.memory),
                "embeddings": None if self.embeddings is None else type(self.embeddings).__name__}

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = super()._get_ls_params(stop=stop, **kwargs)
        params.update(ls_provider="rcc", ls_model_name=str(kwargs.get("model", self.model_name)), ls_model_type="chat",
                      ls_temperature=self.temperature, ls_max_tokens=self.max_tokens)
        return params

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = engine_for(self.model, self.rate)
        return self._engine

    def _embedder(self) -> CachedEmbedding | None:
        """`embeddings` as the ranking's `embed` (documents' embeddings, cached per text), None without one."""
        if self.embeddings is None:
            return None
        if self._embed is None or self._embed[0] is not self.embeddings:
            self._embed = (self.embeddings, CachedEmbedding(self.embeddings.embed_documents))
        return self._embed[1]

    def get_token_ids(self, text: str) -> list[int]:
        """Token ids from the RCC model's own tokenizer (never the GPT-2 download LangChain falls back to)."""
        if self._engine is None and not isinstance(self.model, RCCModel):
            from rcc_model import load_tokenizer_only

            return load_tokenizer_only(self.model)(text, add_special_tokens=False)["input_ids"]
        return self.engine.model.encode_text(text)

    # ------------------------------------------------------------------ tools
    def bind_tools(self, tools: Sequence[dict[str, Any] | type | Callable | BaseTool], *,
                   tool_choice: str | dict | bool | None = None,
                   **kwargs: Any) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind tools; calls are written by schema-constrained decoding, so they always parse and match the
        tool's argument schema; a schema it cannot honour is refused here (`UnsupportedSchemaError` naming the
        keyword), and so by `with_structured_output`. `tool_choice`: "auto" (default: the model decides), "none",
        "any" / "required" (must call), or a tool name."""
        formatted = [convert_to_openai_tool(tool) for tool in tools]
        names = [t["function"]["name"] for t in formatted]
        forced = _tool_choice(tool_choice)
        if forced not in (None, "none", "any") and forced not in names:
            raise ValueError(f"tool_choice {forced!r} is not one of the bound tools {names}")
        for tool in formatted:  # refuse a schema that constrained decoding cannot honour, now
            SchemaDecoder.check_schema(tool["function"].get("parameters", {"type": "object"}))
        return super().bind(tools=formatted, tool_choice=forced, **kwargs)

    # ------------------------------------------------------------------ one synchronous core
    def _chunks(self, messages: list[BaseMessage], stop: list[str] | None, **kwargs: Any
                ) -> Iterator[ChatGenerationChunk]:
        engine = self.engine
        tools, choice = kwargs.pop("tools", None), kwargs.pop("tool_choice", None)
        kwargs.pop("ls_structured_output_format", None)
        attached = kwargs.pop("memory", self.memory)
        sampling = pop_sampling(kwargs, self, [*(self.stop or []), *(stop or [])])
        memory_budget, expand_tokens = kwargs.pop("memory_budget", self.memory_budget), kwargs.pop(
            "expand_tokens", self.expand_tokens)  # per call, as invoke(..., expand_tokens=0) or bind()
        if kwargs:
            raise TypeError(f"unexpected arguments {sorted(kwargs)}")
        budget = engine.read_budget(sampling["max_new_tokens"], memory_budget)
        room = engine.prompt_room(sampling["max_new_tokens"], budget, expand_tokens,
                                  tools_prompt(tools) if tools and choice != "none" else "")
        decoder_input = split_messages(messages, engine.count_tokens, self.compress_threshold,
                                       self.instruction_reconstruction, attached, room)
        info = GenerationInfo()
        calls_tools = decoder_input.question is None and bool(tools) and choice != "none"
        parts, read, created = engine.read(decoder_input, self.memory_store, self.rate, budget, self.read_alignments,
                                           expand_tokens, self._embedder(),
                                           split=self.split_questions and not calls_tools)
        pieces: Iterator[str | ToolCall]
        if calls_tools:
            (part,) = parts
            pieces = engine.tool_call_or_text(part.memory, part.conversation.chat, tools, choice,
                                              isinstance(messages[-1], ToolMessage), self.tool_call_margin, info,
                                              sampling)
            part.conversation.chat = with_tools(part.conversation.chat, tools)  # counted with the tools described
        else:
            pieces = engine.answer_parts(parts, info, **sampling)
        for piece in pieces:
            if isinstance(piece, ToolCall):
                chunk = {"name": piece.name, "args": json.dumps(piece.arguments), "id": piece.id, "index": 0,
                         "type": "tool_call_chunk"}
                yield ChatGenerationChunk(message=AIMessageChunk(content="", tool_call_chunks=[chunk]))
            else:
                yield ChatGenerationChunk(message=AIMessageChunk(content=piece))
        input_tokens = engine.chat_tokens(parts) + read + created  # all memory given, also windows left unread
        usage = {"input_tokens": input_tokens, "output_tokens": info.output_tokens,
                 "total_tokens": input_tokens + info.output_tokens,
                 "input_token_details": {"cache_read": read, "cache_creation": created}}
        metadata = {"model_name": self.model_name, "model_provider": "rcc",
                    "compression_rate": engine.model.config.check_rate(self.rate), **reading_metadata(parts),
                    "finish_reason": info.finish_reason}
        yield ChatGenerationChunk(message=AIMessageChunk(content="", usage_metadata=usage,
                                                         response_metadata=metadata, chunk_position="last"))

    # ------------------------------------------------------------------ LangChain's entry points
    def _stream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any
                ) -> Iterator[ChatGenerationChunk]:
        for chunk in self._chunks(messages, stop, **kwargs):
            if run_manager and chunk.message.content:
                run_manager.on_llm_new_token(chunk.message.content, chunk=chunk)
            yield chunk

    async def _astream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                       run_manager: AsyncCallbackManagerForLLMRun | None = None, **kwargs: Any
                       ) -> AsyncIterator[ChatGenerationChunk]:
        async for chunk in iterate_in_thread(lambda: self._chunks(messages, stop, **kwargs),
                                           lambda: self.engine.lock):
            if run_manager and chunk.message.content:
                await run_manager.on_llm_new_token(chunk.message.content, chunk=chunk)
            yield chunk

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        return _aggregate(list(self._stream(messages, stop, run_manager, **kwargs)))

    async def _agenerate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                         run_manager: AsyncCallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        return _aggregate([chunk async for chunk in self._astream(messages, stop, run_manager, **kwargs)])


def _aggregate(chunks: list[ChatGenerationChunk]) -> ChatResult:
    total = chunks[0]
    for chunk in chunks[1:]:
        total += chunk
    message = total.message
    return ChatResult(generations=[ChatGeneration(message=AIMessage(
        content=message.content, tool_calls=message.tool_calls, usage_metadata=message.usage_metadata,
        response_metadata=message.response_metadata))])


def _tool_choice(choice: str | dict | bool | None) -> str | None:
    """Normalise LangChain's tool_choice spellings to None (auto), "none", "any" or a tool name."""
    if choice in (None, "auto", False):
        return None
    if choice in ("any", "required", True):
        return "any"
    if isinstance(choice, dict):
        return choice.get("function", {}).get("name") or choice.get("name")
    return str(choice)


ChatRCC = RCCChatModel
