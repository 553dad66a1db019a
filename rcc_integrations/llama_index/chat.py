"""`RCCChatEngine`: a conversation over an `RCCMemoryIndex`; each turn reads the documents' memory (and long
earlier turns are compressed too), never pasted document text, at the slot alignments its query engine reads."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from threading import Thread

from llama_index.core.base.llms.types import ChatMessage, ChatResponse, MessageRole
from llama_index.core.chat_engine.types import AgentChatResponse, BaseChatEngine, StreamingAgentChatResponse
from llama_index.core.memory import ChatMemoryBuffer
from llama_index.core.schema import NodeWithScore, QueryBundle

from rcc_integrations.llama_index.llm import RCCLLM
from rcc_integrations.llama_index.query import RCCMemoryRetriever
from rcc_model import PART_SEPARATOR, CompressedMemory, MemoryWithText, question_parts

Ask = tuple[list[ChatMessage], list[CompressedMemory | MemoryWithText]]  # what the LLM answers one part from


class RCCChatEngine(BaseChatEngine):
    """Chat with the documents of an index: every turn answers from the memory of the documents the
    retriever selects (`source_nodes`), the windows it selects to be read as text in the turn's message (not
    kept in the history), with the conversation so far in the chat template. A turn that asks several things
    (`rcc_model.question_parts`) is retrieved for and answered part by part, the answers one per line, as the
    query engine does (`split_questions=False` asks it whole)."""

    def __init__(self, index, max_tokens: int = 256, memory_budget: int | None = None,
                 system_prompt: str | None = None, read_alignments: int | None = None,
                 expand_tokens: int | None = None, split_questions: bool = True):
        self.index = index
        self.retriever = RCCMemoryRetriever(index, memory_budget=memory_budget, answer_tokens=max_tokens,
                                            expand_tokens=expand_tokens)
        # reads what it is given: each part's windows, retrieved here
        self.llm = RCCLLM(model=index.engine.model, rate=index.rate, max_tokens=max_tokens, memory_budget=memory_budget,
                          read_alignments=read_alignments, expand_tokens=0, split_questions=False)
        self.split_questions = split_questions
        self.prefix = [ChatMessage(role=MessageRole.SYSTEM, content=system_prompt)] if system_prompt else []
        self._memory = ChatMemoryBuffer.from_defaults(token_limit=10**9,
                                                      tokenizer_fn=index.engine.model.encode_text)

    @property
    def chat_history(self) -> list[ChatMessage]:
        return self._memory.get_all()

    def reset(self) -> None:
        self._memory.reset()

    def _turn(self, message: str, chat_history: list[ChatMessage] | None
              ) -> tuple[list[str], list[Ask], list[NodeWithScore]]:
        """The parts of the turn's question, what the LLM answers each from, and the nodes read (each once)."""
        if chat_history is not None:
            self._memory.set(chat_history)
        history = [*self.prefix, *self._memory.get_all()]
        self._memory.put(ChatMessage(role=MessageRole.USER, content=message))
        parts = question_parts(message) if self.split_questions else [message]
        asks, sources = [], {}
        for part in parts:
            found = self.retriever.retrieve(QueryBundle(part))
            nodes = [s.node for s in found]
            memory = self.index.text_memory_of_nodes(nodes, self.llm.read_alignments)
            (turn,) = self.index.reading_of(nodes).prompt([{"role": "user", "content": part}])
            asks.append(([*history, ChatMessage(role=MessageRole.USER, content=turn["content"])],
                         [memory] if memory.num_slots else []))
            for source in found:
                sources.setdefault(source.node.node_id, source)
        return parts, asks, list(sources.values())

    @staticmethod
    def _response(parts: list[str], responses: list[ChatResponse], sources: list[NodeWithScore]
                  ) -> AgentChatResponse:
        if len(responses) == 1:
            return AgentChatResponse(response=responses[0].message.content or "", source_nodes=sources,
                                     metadata=responses[0].raw)
        text = PART_SEPARATOR.join(r.message.content or "" for r in responses)
        usage = [r.raw["usage"] for r in responses]
        summed = {key: sum(u[key] for u in usage) for key in ("prompt_tokens", "completion_tokens", "total_tokens",
                                                               "memory_slots")}
        return AgentChatResponse(response=text, source_nodes=sources,
                                 metadata={"usage": summed, "question_parts": parts,
                                           "parts": [r.raw for r in responses]})

    def _answer(self, responses: list[ChatResponse]) -> None:
        self._memory.put(ChatMessage(role=MessageRole.ASSISTANT,
                                     content=PART_SEPARATOR.join(r.message.content or "" for r in responses)))

    def chat(self, message: str, chat_history: list[ChatMessage] | None = None) -> AgentChatResponse:
        parts, asks, sources = self._turn(message, chat_history)
        responses = [self.llm.chat(messages, memory=memories) for messages, memories in asks]
        self._answer(responses)
        return self._response(parts, responses, sources)

    async def achat(self, message: str, chat_history: list[ChatMessage] | None = None) -> AgentChatResponse:
        parts, asks, sources = self._turn(message, chat_history)
        responses = [await self.llm.achat(messages, memory=memories) for messages, memories in asks]
        self._answer(responses)
        return self._response(parts, responses, sources)

    def _stream(self, asks: list[Ask]) -> Iterator[ChatResponse]:
        joined = _Joined()
        for messages, memories in asks:
            yield from joined.next_part()
            for response in self.llm.stream_chat(messages, memory=memories):
                yield joined.add(response)

    async def _astream(self, asks: list[Ask]) -> AsyncIterator[ChatResponse]:
        joined = _Joined()
        for messages, memories in asks:
            for separator in joined.next_part():
                yield separator
            async for response in await self.llm.astream_chat(messages, memory=memories):
                yield joined.add(response)

    def stream_chat(self, message: str, chat_history: list[ChatMessage] | None = None
                    ) -> StreamingAgentChatResponse:
        _, asks, sources = self._turn(message, chat_history)
        response = StreamingAgentChatResponse(chat_stream=self._stream(asks), source_nodes=sources)
        thread = Thread(target=response.write_response_to_history, args=(self._memory,))
        response.write_response_to_history_thread = thread
        thread.start()
        return response

    async def astream_chat(self, message: str, chat_history: list[ChatMessage] | None = None
                           ) -> StreamingAgentChatResponse:
        import asyncio

        _, asks, sources = self._turn(message, chat_history)
        response = StreamingAgentChatResponse(achat_stream=self._astream(asks), source_nodes=sources)
        response.awrite_response_to_history_task = asyncio.create_task(
            response.awrite_response_to_history(self._memory))
        return response


class _Joined:
    """The responses of the parts' streams as one stream's: the text so far, the parts joined by
    `PART_SEPARATOR`."""

    def __init__(self) -> None:
        self.text, self.before, self.parts = "", "", 0

    def next_part(self) -> list[ChatResponse]:
        """The separator before the next part's answer, as a response (none before the first)."""
        self.parts += 1
        if self.parts == 1:
            return []
        self.text += PART_SEPARATOR
        self.before = self.text
        return [ChatResponse(message=ChatMessage(role=MessageRole.ASSISTANT, content=self.text), delta=PART_SEPARATOR)]

    def add(self, response: ChatResponse) -> ChatResponse:
        """A response of the current part's stream, its message holding every part's answer so far."""
        self.text = self.before + (response.message.content or "")
        return ChatResponse(message=ChatMessage(role=MessageRole.ASSISTANT, content=self.text), delta=response.delta,
                            raw=response.raw)
