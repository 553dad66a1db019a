"""`RCCChatEngine`: a conversation over an `RCCMemoryIndex`; each turn reads the documents' memory (and long
earlier turns are compressed too), never pasted document text, at the slot alignments its query engine reads."""

from __future__ import annotations

from threading import Thread

from llama_index.core.base.llms.types import ChatMessage, MessageRole
from llama_index.core.chat_engine.types import AgentChatResponse, BaseChatEngine, StreamingAgentChatResponse
from llama_index.core.memory import ChatMemoryBuffer
from llama_index.core.schema import NodeWithScore, QueryBundle

from rcc_integrations.llama_index.llm import RCCLLM
from rcc_integrations.llama_index.query import RCCMemoryRetriever
from rcc_model import CompressedMemory, MemoryWithText


class RCCChatEngine(BaseChatEngine):
    """Chat with the documents of an index: every turn answers from the memory of the documents the
    retriever selects (`source_nodes`), the windows it selects to be read as text in the turn's message (not
    kept in the history), with the conversation so far in the chat template. A turn is asked whole, even one that
    asks two things (the query engine answers those part by part)."""

    def __init__(self, index, max_tokens: int = 256, memory_budget: int | None = None,
                 system_prompt: str | None = None, read_alignments: int | None = None,
                 expand_tokens: int | None = None):
        self.index = index
        self.retriever = RCCMemoryRetriever(index, memory_budget=memory_budget, answer_tokens=max_tokens,
                                            expand_tokens=expand_tokens)
        # reads what it is given, the turn asked whole: its windows were retrieved for the whole turn
        self.llm = RCCLLM(model=index.engine.model, rate=index.rate, max_tokens=max_tokens, memory_budget=memory_budget,
                          read_alignments=read_alignments, expand_tokens=0, split_questions=False)
        self.prefix = [ChatMessage(role=MessageRole.SYSTEM, content=system_prompt)] if system_prompt else []
        self._memory = ChatMemoryBuffer.from_defaults(token_limit=10**9,
                                                      tokenizer_fn=index.engine.model.encode_text)

    @property
    def chat_history(self) -> list[ChatMessage]:
        return self._memory.get_all()

    def reset(self) -> None:
        self._memory.reset()

    def _turn(self, message: str, chat_history: list[ChatMessage] | None
              ) -> tuple[list[ChatMessage], list[NodeWithScore], list[CompressedMemory | MemoryWithText]]:
        if chat_history is not None:
            self._memory.set(chat_history)
        sources = self.retriever.retrieve(QueryBundle(message))
        nodes = [s.node for s in sources]
        memory = self.index.text_memory_of_nodes(nodes, self.llm.read_alignments)
        memories = [memory] if memory.num_slots else []
        self._memory.put(ChatMessage(role=MessageRole.USER, content=message))
        (turn,) = self.index.reading_of(nodes).prompt([{"role": "user", "content": message}])
        asked = ChatMessage(role=MessageRole.USER, content=turn["content"])
        return [*self.prefix, *self._memory.get_all()[:-1], asked], sources, memories

    def chat(self, message: str, chat_history: list[ChatMessage] | None = None) -> AgentChatResponse:
        messages, sources, memories = self._turn(message, chat_history)
        response = self.llm.chat(messages, memory=memories)
        self._memory.put(response.message)
        return AgentChatResponse(response=response.message.content or "", source_nodes=sources,
                                 metadata=response.raw)

    def stream_chat(self, message: str, chat_history: list[ChatMessage] | None = None
                    ) -> StreamingAgentChatResponse:
        messages, sources, memories = self._turn(message, chat_history)
        response = StreamingAgentChatResponse(chat_stream=self.llm.stream_chat(messages, memory=memories),
                                              source_nodes=sources)
        thread = Thread(target=response.write_response_to_history, args=(self._memory,))
        response.write_response_to_history_thread = thread
        thread.start()
        return response

    async def achat(self, message: str, chat_history: list[ChatMessage] | None = None) -> AgentChatResponse:
        messages, sources, memories = self._turn(message, chat_history)
        response = await self.llm.achat(messages, memory=memories)
        self._memory.put(response.message)
        return AgentChatResponse(response=response.message.content or "", source_nodes=sources,
                                 metadata=response.raw)

    async def astream_chat(self, message: str, chat_history: list[ChatMessage] | None = None
                           ) -> StreamingAgentChatResponse:
        import asyncio

        messages, sources, memories = self._turn(message, chat_history)
        stream = await self.llm.astream_chat(messages, memory=memories)
        response = StreamingAgentChatResponse(achat_stream=stream, source_nodes=sources)
        response.awrite_response_to_history_task = asyncio.create_task(
            response.awrite_response_to_history(self._memory))
        return response
