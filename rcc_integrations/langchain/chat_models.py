"""`RCCChatModel` (alias `ChatRCC`): a LangChain chat model that reads long context through RCC memory."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.language_models.base import LangSmithParams
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import ConfigDict, Field, PrivateAttr

from rcc_integrations._runtime import Engine, engine_for, iterate_in_thread
from rcc_integrations.langchain.messages import split_messages
from rcc_model import CompressedMemory, GenerationInfo, RCCModel


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
            for chunk in llm.stream([("system", long_text), ("human", "Summarise it.")]):
                print(chunk.content, end="")
    """

    model: Any = Field(default="default", description="packaged name, checkpoint folder, or an RCCModel")
    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] | None = None
    compress_threshold: int = Field(default=256, description="messages longer than this (tokens) become memory")
    instruction_reconstruction: bool = Field(
        default=False, description="compress the question too; the decoder recalls it from memory (the paper)")

    model_config = ConfigDict(arbitrary_types_allowed=True)
    _engine: Engine | None = PrivateAttr(default=None)

    @property
    def _llm_type(self) -> str:
        return "rcc"

    @property
    def model_name(self) -> str:
        return self.model if isinstance(self.model, str) else f"RCCModel({self.model.config.base})"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        model = self.model if isinstance(self.model, str) else self.model.fingerprint
        return {"model": str(model), "max_tokens": self.max_tokens, "temperature": self.temperature,
                "top_p": self.top_p, "seed": self.seed, "stop": self.stop,
                "compress_threshold": self.compress_threshold,
                "instruction_reconstruction": self.instruction_reconstruction}

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = super()._get_ls_params(stop=stop, **kwargs)
        params.update(ls_provider="rcc", ls_model_name=self.model_name, ls_model_type="chat",
                      ls_temperature=self.temperature, ls_max_tokens=self.max_tokens)
        return params

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = engine_for(self.model)
        return self._engine

    def get_token_ids(self, text: str) -> list[int]:
        """Token ids from the RCC model's own tokenizer (never the GPT-2 download LangChain falls back to)."""
        if self._engine is None and not isinstance(self.model, RCCModel):
            from rcc_model.checkpoint import load_tokenizer_only

            return load_tokenizer_only(self.model)(text, add_special_tokens=False)["input_ids"]
        return self.engine.model.encode_text(text)

    # ------------------------------------------------------------------ one synchronous core
    def _chunks(self, messages: list[BaseMessage], stop: list[str] | None, **kwargs: Any
                ) -> Iterator[ChatGenerationChunk]:
        engine = self.engine
        model = engine.model
        decoder_input = split_messages(messages, engine.count_tokens, self.compress_threshold,
                                       self.instruction_reconstruction, kwargs.pop("memory", None))
        memories, read, created = [], 0, 0
        for piece in decoder_input.pieces:
            if isinstance(piece, CompressedMemory):
                model.check_memory(piece)
                memories.append(piece)
                read += piece.token_count
                continue
            memory, cached = engine.memory_for(piece)
            memories.append(memory)
            read, created = (read + memory.token_count, created) if cached else (read, created + memory.token_count)
        sampling = {"max_new_tokens": kwargs.pop("max_tokens", self.max_tokens),
                    "temperature": kwargs.pop("temperature", self.temperature),
                    "top_p": kwargs.pop("top_p", self.top_p), "seed": kwargs.pop("seed", self.seed),
                    "stop": [*(self.stop or []), *(stop or [])]}
        if kwargs:
            raise TypeError(f"unexpected arguments {sorted(kwargs)}")
        info = GenerationInfo()
        if decoder_input.question is not None:
            question_memory, _ = engine.memory_for("\n\n" + decoder_input.question)
            memory = CompressedMemory.concat([*memories, question_memory])
            with engine.lock:
                text = model.ask(memory, None, max_new_tokens=sampling.pop("max_new_tokens"), **sampling)
            info.output_tokens, info.finish_reason = engine.count_tokens(text), "stop"
            info.memory_slots = memory.num_slots
            pieces: Iterator[str] = iter([text] if text else [])
        else:
            memory = CompressedMemory.concat(memories) if memories else model.empty_memory()
            pieces = engine.stream(memory, decoder_input.chat, info=info, **sampling)
        for piece in pieces:
            yield ChatGenerationChunk(message=AIMessageChunk(content=piece))
        plain = sum(engine.count_tokens(m["content"]) for m in decoder_input.chat)
        input_tokens = plain + memory.token_count
        usage = {"input_tokens": input_tokens, "output_tokens": info.output_tokens,
                 "total_tokens": input_tokens + info.output_tokens,
                 "input_token_details": {"cache_read": read, "cache_creation": created}}
        metadata = {"model_name": self.model_name, "model_provider": "rcc", "compression_rate": model.config.rate,
                    "memory_slots": memory.num_slots, "memory_tokens": memory.token_count,
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
        async for chunk in iterate_in_thread(lambda: self._chunks(messages, stop, **kwargs)):
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
        content=message.content, usage_metadata=message.usage_metadata,
        response_metadata=message.response_metadata))])


ChatRCC = RCCChatModel
