"""Reading an `RCCMemoryIndex`: which documents, or which of their windows, a question reads (retriever), and
answering from that memory (query engine), never from pasted text."""

from __future__ import annotations

from typing import Any

from llama_index.core.base.base_query_engine import BaseQueryEngine
from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.base.response.schema import AsyncStreamingResponse, Response, StreamingResponse
from llama_index.core.schema import NodeWithScore, QueryBundle

from rcc_integrations._conversation import DecoderInput
from rcc_integrations._runtime import Part, iterate_in_thread, reading_metadata
from rcc_integrations.llama_index.index import READ_KEY, WINDOW_KEY
from rcc_model import GenerationInfo, question_parts, read_within


class RCCMemoryRetriever(BaseRetriever):
    """Returns what a question reads: every document, whole (score 1.0), while their memory fits the slot budget
    and nothing is to be read as text; otherwise the windows that best match the question
    (`rcc_model.read_within`: BM25, fused with the index's embedding model where it has one), as nodes holding
    the window's text with its document as parent: first those read as text (metadata `rcc_read` "expanded"),
    best first, then those read as slots ("compressed"); score = the ranking's.

    The slot budget is `memory_budget`, else the index's, else what the model was measured to read well
    (`RCCConfig.read_slots`), never more than the decoder's positions leave for question and answer; the text
    budget `expand_tokens`, else the index's, else the model's (`RCCConfig.expand_tokens`; 0 = slots only).
    """

    def __init__(self, index, memory_budget: int | None = None, answer_tokens: int = 256,
                 expand_tokens: int | None = None, **kwargs: Any):
        super().__init__(callback_manager=index._callback_manager, **kwargs)
        self.index = index
        self.budget = index.engine.read_budget(answer_tokens, memory_budget or index.memory_budget)
        self.expand_tokens = index.engine.expand_budget(index.expand_tokens if expand_tokens is None
                                                        else expand_tokens)

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        ids = self.index.node_ids
        memories = [self.index.outline_of(node_id) for node_id in ids]  # ranking reads no states
        if not ids or (not self.expand_tokens and sum(m.num_slots for m in memories) <= self.budget):
            return [NodeWithScore(node=node, score=1.0) for node in self.index.docstore.get_nodes(ids)]
        reading = read_within(query_bundle.query_str, memories, [self.index.window_texts(i) for i in ids],
                              self.budget, expand_tokens=self.expand_tokens, embed=self.index.embedder())
        shown = {(c.memory, c.window) for c in reading.choices if c.read == "expanded"}
        return [NodeWithScore(node=self.index.window_node(ids[c.memory], c.window, c.read,
                                                          c.read == "compressed" and (c.memory, c.window) in shown),
                              score=c.score)
                for c in sorted(reading.choices, key=lambda c: (c.read != "expanded", -(c.score or 0.0)))]


class RCCQueryEngine(BaseQueryEngine):
    """Answers a question from the memory of the retrieved documents, with the windows retrieved to be read as
    text before the question; `source_nodes` names them, and `metadata["reading"]` says how each was read.

    A question that asks several things ("What is X, and who is Y?", `rcc_model.question_parts`) is retrieved for
    and answered part by part, the answers one per line; `metadata["question_parts"]` lists the parts and each
    read window's `part` says which one read it (`split_questions=False` asks it whole)."""

    def __init__(self, index, streaming: bool = False, max_tokens: int = 256, memory_budget: int | None = None,
                 read_alignments: int | None = None, expand_tokens: int | None = None, split_questions: bool = True,
                 **sampling: Any):
        super().__init__(callback_manager=index._callback_manager)
        self.index = index
        self.retriever = RCCMemoryRetriever(index, memory_budget=memory_budget, answer_tokens=max_tokens,
                                            expand_tokens=expand_tokens)
        self.streaming = streaming
        self.read_alignments = read_alignments
        self.split_questions = split_questions
        self.sampling = {"max_new_tokens": max_tokens, **sampling}

    def _get_prompt_modules(self) -> dict[str, Any]:
        return {}

    def _prepare(self, query_bundle: QueryBundle) -> tuple[list[Part], list[list[NodeWithScore]]]:
        """What each part of the question reads (one part where it asks one thing), and the nodes it read."""
        question = query_bundle.query_str
        asked = question_parts(question) if self.split_questions else [question]
        parts, sources = [], []
        for part in asked:
            nodes = self.retriever.retrieve(QueryBundle(part) if len(asked) > 1 else query_bundle)
            reading = self.index.reading_of([n.node for n in nodes])
            memory = self.index.engine.views(reading.memory, reading.texts, self.read_alignments)
            chat = reading.prompt([{"role": "user", "content": part}])
            parts.append(Part(part, DecoderInput(chat=chat), reading, memory))
            sources.append(nodes)
        return parts, sources

    def _pieces(self, parts: list[Part], info: GenerationInfo):
        return self.index.engine.answer_parts(parts, info, **self.sampling)

    @staticmethod
    def _response(parts: list[Part], sources: list[list[NodeWithScore]], info: GenerationInfo | None = None
                  ) -> tuple[list[NodeWithScore], dict[str, Any]]:
        """The source nodes (each once, as its first part read it) and the metadata of an answer."""
        split = len(parts) > 1
        reading = [{"node_id": s.node.parent_node.node_id if s.node.parent_node else s.node.node_id,
                    "window": s.node.metadata.get(WINDOW_KEY), "score": s.score,
                    "read": s.node.metadata.get(READ_KEY, "compressed"), **({"part": k} if split else {})}
                   for k, nodes in enumerate(sources) for s in nodes]
        read = reading_metadata(parts)
        metadata = {key: read[key] for key in ("memory_slots", "memory_alignments", "memory_tokens")}
        metadata["reading"] = reading
        if split:
            metadata["question_parts"] = read["question_parts"]
        if info is not None:
            metadata |= {"output_tokens": info.output_tokens, "finish_reason": info.finish_reason}
        unique: dict[str, NodeWithScore] = {}
        for s in (s for nodes in sources for s in nodes):
            unique.setdefault(s.node.node_id, s)
        return list(unique.values()), metadata

    def _query(self, query_bundle: QueryBundle) -> Response | StreamingResponse:
        parts, sources = self._prepare(query_bundle)
        info = GenerationInfo()
        pieces = self._pieces(parts, info)
        if self.streaming:
            return StreamingResponse(pieces, *self._response(parts, sources))
        text = "".join(pieces)
        return Response(text, *self._response(parts, sources, info))

    async def _aquery(self, query_bundle: QueryBundle) -> Response | AsyncStreamingResponse:
        parts, sources = self._prepare(query_bundle)
        info = GenerationInfo()
        pieces = iterate_in_thread(lambda: self._pieces(parts, info), lambda: self.index.engine.lock)
        if self.streaming:
            return AsyncStreamingResponse(pieces, *self._response(parts, sources))
        text = "".join([piece async for piece in pieces])
        return Response(text, *self._response(parts, sources, info))
