"""Reading an `RCCMemoryIndex`: which documents, or which of their windows, a question reads (retriever), and
answering from that memory (query engine), never from pasted text."""

from __future__ import annotations

from typing import Any

from llama_index.core.base.base_query_engine import BaseQueryEngine
from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.base.response.schema import AsyncStreamingResponse, Response, StreamingResponse
from llama_index.core.schema import NodeWithScore, QueryBundle

from rcc_integrations._runtime import iterate_in_thread
from rcc_model import CompressedMemory, GenerationInfo, MemoryViews, read_within


class RCCMemoryRetriever(BaseRetriever):
    """Returns what a question reads: every document, whole (score 1.0), while their memory fits the budget;
    otherwise the windows whose text best matches the question (BM25, `rcc_model.reading`), as nodes holding
    the window's text with its document as parent, best first.

    The budget is `memory_budget` slots, else the index's, else what the model was measured to read well
    (`RCCConfig.read_slots`), never more than the decoder's positions leave for question and answer.
    """

    def __init__(self, index, memory_budget: int | None = None, answer_tokens: int = 256, **kwargs: Any):
        super().__init__(callback_manager=index._callback_manager, **kwargs)
        self.index = index
        self.budget = index.engine.read_budget(answer_tokens, memory_budget or index.memory_budget)

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        ids = self.index.node_ids
        memories = [self.index.memory_of(node_id) for node_id in ids]
        if sum(m.num_slots for m in memories) <= self.budget:
            return [NodeWithScore(node=node, score=1.0) for node in self.index.docstore.get_nodes(ids)]
        reading = read_within(query_bundle.query_str, memories, [self.index.window_texts(i) for i in ids],
                              self.budget)
        nodes = [NodeWithScore(node=self.index.window_node(node_id, window), score=score)
                 for node_id, windows, scores in zip(ids, reading.windows, reading.scores)
                 for window, score in zip(windows, scores)]
        return sorted(nodes, key=lambda n: -(n.score or 0.0))


class RCCQueryEngine(BaseQueryEngine):
    """Answers a question from the memory of the retrieved documents; `source_nodes` names them."""

    def __init__(self, index, streaming: bool = False, max_tokens: int = 256, memory_budget: int | None = None,
                 read_alignments: int | None = None, **sampling: Any):
        super().__init__(callback_manager=index._callback_manager)
        self.index = index
        self.retriever = RCCMemoryRetriever(index, memory_budget=memory_budget, answer_tokens=max_tokens)
        self.streaming = streaming
        self.read_alignments = read_alignments
        self.sampling = {"max_new_tokens": max_tokens, **sampling}

    def _get_prompt_modules(self) -> dict[str, Any]:
        return {}

    def _prepare(self, query_bundle: QueryBundle) -> tuple[list[NodeWithScore], CompressedMemory | MemoryViews]:
        sources = self.retriever.retrieve(query_bundle)
        return sources, self.index.reading_of_nodes([s.node for s in sources], self.read_alignments)

    def _pieces(self, question: str, memory: CompressedMemory | MemoryViews, info: GenerationInfo):
        return self.index.engine.stream(memory, [{"role": "user", "content": question}], info=info, **self.sampling)

    def _metadata(self, memory: CompressedMemory | MemoryViews, info: GenerationInfo) -> dict[str, Any]:
        return {"memory_slots": memory.num_slots, "memory_tokens": memory.token_count,
                "output_tokens": info.output_tokens, "finish_reason": info.finish_reason}

    def _query(self, query_bundle: QueryBundle) -> Response | StreamingResponse:
        sources, memory = self._prepare(query_bundle)
        info = GenerationInfo()
        pieces = self._pieces(query_bundle.query_str, memory, info)
        if self.streaming:
            return StreamingResponse(response_gen=pieces, source_nodes=sources,
                                     metadata={"memory_slots": memory.num_slots})
        text = "".join(pieces)
        return Response(response=text, source_nodes=sources, metadata=self._metadata(memory, info))

    async def _aquery(self, query_bundle: QueryBundle) -> Response | AsyncStreamingResponse:
        sources, memory = self._prepare(query_bundle)
        info = GenerationInfo()
        pieces = iterate_in_thread(lambda: self._pieces(query_bundle.query_str, memory, info),
                                   lambda: self.index.engine.lock)
        if self.streaming:
            return AsyncStreamingResponse(response_gen=pieces, source_nodes=sources,
                                          metadata={"memory_slots": memory.num_slots})
        text = "".join([piece async for piece in pieces])
        return Response(response=text, source_nodes=sources, metadata=self._metadata(memory, info))
