"""Reading an `RCCMemoryIndex`: which documents' memory a question reads (retriever), and answering from
that memory (query engine), never from pasted text."""

from __future__ import annotations

from typing import Any

import torch
from llama_index.core.base.base_query_engine import BaseQueryEngine
from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.base.response.schema import AsyncStreamingResponse, Response, StreamingResponse
from llama_index.core.schema import NodeWithScore, QueryBundle

from rcc_integrations._runtime import iterate_in_thread
from rcc_model import CompressedMemory, GenerationInfo

QUESTION_RESERVE = 128  # decoder positions kept free for the question (the answer's are added)


def _signature(memory: CompressedMemory) -> torch.Tensor:
    """A document's gist for routing: the mean over slots of the encoder's last hidden-state entry."""
    return torch.nn.functional.normalize(memory.states[:, -1].float().mean(0), dim=0)


class RCCMemoryRetriever(BaseRetriever):
    """Returns the documents a question reads: all of them while their memory fits the decoder (score 1.0),
    otherwise the most relevant ones (cosine of encoder-state gists, query vs document) that fit the budget."""

    def __init__(self, index, memory_budget: int | None = None, answer_tokens: int = 256, **kwargs: Any):
        super().__init__(callback_manager=index._callback_manager, **kwargs)
        self.index = index
        positions = index.engine.model.max_positions
        free = positions - min(QUESTION_RESERVE + answer_tokens, positions // 2)
        self.budget = memory_budget or index.memory_budget or free

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        ids = self.index.node_ids
        memories = {node_id: self.index.memory_of(node_id) for node_id in ids}
        total = sum(m.num_slots for m in memories.values())
        if total <= self.budget:
            scored = [(node_id, 1.0) for node_id in ids]
        else:
            query, _ = self.index.engine.memory_for(query_bundle.query_str, rate=self.index.rate)
            gist = _signature(query)
            ranked = sorted(ids, key=lambda i: -float(_signature(memories[i]) @ gist))
            scored, used = [], 0
            for node_id in ranked:
                if used + memories[node_id].num_slots <= self.budget:
                    scored.append((node_id, float(_signature(memories[node_id]) @ gist)))
                    used += memories[node_id].num_slots
        nodes = self.index.docstore.get_nodes([node_id for node_id, _ in scored])
        return [NodeWithScore(node=node, score=score) for node, (_, score) in zip(nodes, scored)]


class RCCQueryEngine(BaseQueryEngine):
    """Answers a question from the memory of the retrieved documents; `source_nodes` names them."""

    def __init__(self, index, streaming: bool = False, max_tokens: int = 256, memory_budget: int | None = None,
                 **sampling: Any):
        super().__init__(callback_manager=index._callback_manager)
        self.index = index
        self.retriever = RCCMemoryRetriever(index, memory_budget=memory_budget, answer_tokens=max_tokens)
        self.streaming = streaming
        self.sampling = {"max_new_tokens": max_tokens, **sampling}

    def _get_prompt_modules(self) -> dict[str, Any]:
        return {}

    def _prepare(self, query_bundle: QueryBundle) -> tuple[list[NodeWithScore], CompressedMemory]:
        sources = self.retriever.retrieve(query_bundle)
        memories = [self.index.memory_of(s.node.node_id) for s in sources]
        return sources, CompressedMemory.concat(memories) if memories else self.index.engine.model.empty_memory()

    def _pieces(self, question: str, memory: CompressedMemory, info: GenerationInfo):
        return self.index.engine.stream(memory, [{"role": "user", "content": question}], info=info, **self.sampling)

    def _metadata(self, memory: CompressedMemory, info: GenerationInfo) -> dict[str, Any]:
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
        pieces = iterate_in_thread(lambda: self._pieces(query_bundle.query_str, memory, info))
        if self.streaming:
            return AsyncStreamingResponse(response_gen=pieces, source_nodes=sources,
                                          metadata={"memory_slots": memory.num_slots})
        text = "".join([piece async for piece in pieces])
        return Response(response=text, source_nodes=sources, metadata=self._metadata(memory, info))
