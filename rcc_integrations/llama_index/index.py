"""`RCCMemoryIndex`: each document compressed whole into RCC memory, instead of chunked and embedded.

By default (`storage="text"`) the persist folder holds no memory at all: LlamaIndex's docstore and index store
(the text and the structure), each document's windows (what ranking reads) and a manifest; a window is
compressed when a question first reads it, into a bounded on-disk cache (`rcc_model.MemoryCache`). With a
memory storage ("int8", "bfloat16", ...) the memory tensors live in side files (safetensors) beside them, so
nothing is compressed at question time; a damaged memory file can always be rebuilt from the text.
"""

from __future__ import annotations

import hashlib
import json
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llama_index.core import Settings
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.data_structs.data_structs import IndexDict
from llama_index.core.data_structs.registry import INDEX_STRUCT_TYPE_TO_INDEX_STRUCT_CLASS
from llama_index.core.indices.base import BaseIndex
from llama_index.core.indices.registry import INDEX_STRUCT_TYPE_TO_INDEX_CLASS
from llama_index.core.schema import BaseNode, Document, NodeRelationship, TextNode, TransformComponent
from llama_index.core.storage.docstore.types import RefDocInfo
from llama_index.core.storage.storage_context import StorageContext

from rcc_integrations._runtime import CachedEmbedding, Engine, engine_for
from rcc_integrations.llama_index.persisted import (
    MANIFEST,
    VECTORS,
    damaged_store,
    embedding_name,
    read_manifest,
    read_outlines,
    read_vectors,
    save_vectors,
    storage_of,
    text_key,
    windows_entry,
)
from rcc_model import (
    CompressedMemory,
    MemoryCache,
    MemoryFileError,
    MemoryMismatchError,
    MemoryStore,
    MemoryViews,
    MemoryWithText,
    RCCModel,
    Reading,
    atomic_folder,
    confined,
    recover,
)

STRUCT_TYPE = "rcc_memory"
WINDOW_KEY = "rcc_window"  # metadata of a window node: which encoder window of its parent document it holds
READ_KEY = "rcc_read"  # metadata of a window node: how a question reads it, "expanded" (as text) or "compressed"
MEMORY_FOLDER = "rcc_memory"
KIND = "rcc-memory-index"
logger = logging.getLogger(__name__)


class RCCMemoryStruct(IndexDict):
    """Node ids of the documents held in memory (one node per document)."""

    @classmethod
    def get_type(cls) -> str:  # a plain string key: LlamaIndex's registries accept it like their enum
        return STRUCT_TYPE


class WholeDocuments(TransformComponent):
    """The identity transform: one node per document, text and metadata unchanged (no chunking)."""

    def __call__(self, nodes: Sequence[BaseNode], **kwargs: Any) -> list[BaseNode]:
        whole = []
        for node in nodes:
            if isinstance(node, Document):
                whole.append(TextNode(id_=f"{node.id_}:memory", text=node.text, metadata=dict(node.metadata),
                                      excluded_llm_metadata_keys=node.excluded_llm_metadata_keys,
                                      relationships={NodeRelationship.SOURCE: node.as_related_node_info()}))
            else:
                whole.append(node)
        return whole


class RCCMemoryIndex(BaseIndex[RCCMemoryStruct]):
    """An index that compresses every document whole into RCC memory and answers from memory.

    Example:
        .. code-block:: python

            from llama_index.core import SimpleDirectoryReader
            from rcc_integrations.llama_index import RCCMemoryIndex

            docs = SimpleDirectoryReader("reports/").load_data()
            index = RCCMemoryIndex.from_documents(docs, show_progress=True)   # default model
            # or from_documents(docs, rate=8): half the memory, with the default's own r = 8 weights
            # or from_documents(docs, embed_model=my_embedding): windows ranked by meaning too, fused with BM25
            # or from_documents(docs, storage="int8"): persist memory too, so no question compresses anything
            response = index.as_query_engine().query("Who signed the March report?")
            print(response, response.metadata["reading"])   # which windows were read as text, which as slots
            index.persist("storage/")
            index = RCCMemoryIndex.load_from_disk("storage/")

    `storage` says how the index keeps memory. "text" (the default) keeps none: `persist` writes the text and
    each document's windows, about what a vector index stores, and a window is compressed when a question first
    reads it (a question reads a few), into a `rcc_model.MemoryCache` of at most `cache_bytes` in `cache_dir`
    (default `$RCC_MEMORY_CACHE`, else `~/.cache/rcc/memories`), so later questions read it from there. "int8"
    (answers as bfloat16's do, at half the bytes), "bfloat16", "float16" or "float32" compress every document
    when it is indexed and persist its memory, some kilobytes per token: no question waits for compression.
    The index answers from memory as it will be stored, before `persist` as after a reload. A loaded index
    keeps the storage it was persisted with unless given another.
    """

    index_struct_cls = RCCMemoryStruct

    def __init__(self, nodes: Sequence[BaseNode] | None = None, index_struct: RCCMemoryStruct | None = None,
                 storage_context: StorageContext | None = None, model: str | Path | RCCModel = "default",
                 rate: int | None = None, memory_budget: int | None = None, batch_size: int = 8,
                 persist_dir: str | Path | None = None, show_progress: bool = False,
                 store: str | Path | MemoryStore | None = None, expand_tokens: int | None = None,
                 embed_model: BaseEmbedding | None = None, storage: str | None = None,
                 cache_dir: str | Path | None = None, cache_bytes: int = MemoryCache.DEFAULT_BYTES, **kwargs: Any):
        if index_struct is not None and persist_dir is not None and recover(persist_dir):
            # a persist interrupted after it committed, just finished: what LlamaIndex read before may mix versions
            storage_context = StorageContext.from_defaults(persist_dir=str(persist_dir))
            index_struct = (storage_context.index_store.get_index_struct(index_struct.index_id)
                            or storage_context.index_store.get_index_struct())  # the new version's, if it is another
        manifest = read_manifest(persist_dir) if index_struct is not None else None
        if store is None and manifest is not None and manifest.get("store"):
            store = _open_store(manifest["store"])
        self._store = MemoryStore(store) if isinstance(store, (str, Path)) else store
        built_at = manifest.get("rate") if manifest is not None and rate is None else None
        built_at = built_at or (self._store.settings.rate if self._store is not None and rate is None else None)
        self._engine: Engine = engine_for(model, rate or built_at)  # a rate's own weights, where the model has them
        self.rate = self._engine.model.config.check_rate(rate or built_at)  # a loaded index keeps its rate
        if self._store is not None:
            _check_store(self._store, self._engine.model, self.rate)
        self.storage = storage_of(storage, manifest, self._engine.model, with_store=self._store is not None)
        if self.storage == "text" and self._store is not None:
            raise ValueError(f"storage='text' keeps no memory, and the memory store {self._store.path} keeps all of "
                             "it outside the index already: give one or the other")
        # text storage: memories compressed on first read, in a bounded on-disk cache; the rest keep them in RAM
        self.cache = MemoryCache(cache_dir, cache_bytes) if self.storage == "text" else None
        self._outlines: dict[str, CompressedMemory] = {}  # text storage: node id -> its memory's shape and windows
        self._memories: dict[str, CompressedMemory] = {}
        self._stored: dict[str, str] = {}  # node id -> id of the document in the store that holds its memory
        self._window_texts: dict[tuple[str, str], list[str]] = {}
        self.memory_budget = memory_budget
        self.expand_tokens = expand_tokens
        self.embed_model = embed_model
        self._embedding: tuple[BaseEmbedding, CachedEmbedding] | None = None
        self._vectors: tuple[str, dict[str, list[float]]] | None = None  # window embeddings a persist kept
        self.batch_size = batch_size
        self.damaged: list[str] = []
        kwargs.pop("transformations", None)
        super().__init__(nodes=nodes, index_struct=index_struct, storage_context=storage_context,
                         transformations=[WholeDocuments()], show_progress=show_progress, **kwargs)
        if index_struct is not None:
            self._load_memories(Path(persist_dir) if persist_dir else None, manifest, requested_rate=rate)

    @classmethod
    def from_documents(cls, documents: Sequence[Document], storage_context: StorageContext | None = None,
                       show_progress: bool = False, **kwargs: Any) -> RCCMemoryIndex:
        """Compress each document whole (no global splitter: LlamaIndex's `transformations=[]` still chunks)."""
        storage_context = storage_context or StorageContext.from_defaults()
        for doc in documents:
            storage_context.docstore.set_document_hash(doc.id_, doc.hash)
        kwargs.pop("transformations", None)
        return cls(nodes=_distinct(WholeDocuments()(documents), set()), storage_context=storage_context,
                   show_progress=show_progress, **kwargs)

    @classmethod
    def from_store(cls, store: str | Path | MemoryStore, storage_context: StorageContext | None = None,
                   show_progress: bool = False, **kwargs: Any) -> RCCMemoryIndex:
        """An index over a memory store compressed beforehand (`rcc compress CORPUS -o STORE`, on as many
        processes as `accelerate launch` gives), compressing nothing: a document's memory is read from the store
        when a question needs it. Documents inserted later are compressed and appended to the store.

        Example:
            .. code-block:: python

                index = RCCMemoryIndex.from_store("corpus.rccstore")   # the model that made the store
                print(index.as_query_engine().query("Which licence covers the parser?"))
        """
        store = MemoryStore(store) if isinstance(store, (str, Path)) else store
        documents = [Document(id_=doc_id, text=store.text(doc_id), metadata=store.metadata(doc_id))
                     for doc_id in store]
        return cls.from_documents(documents, storage_context=storage_context, show_progress=show_progress,
                                  store=store, **kwargs)

    @property
    def store(self) -> MemoryStore | None:
        """The memory store this index reads (and appends inserted documents to), if any."""
        return self._store

    # ------------------------------------------------------------------ what BaseIndex asks for
    @property
    def engine(self) -> Engine:
        return self._engine

    def _compress(self, nodes: Sequence[BaseNode], reuse_store: bool = True) -> None:
        """Compress `nodes`, but those whose memory the store holds for the same text (unless not `reuse_store`);
        with a store, what is compressed is appended to it (superseding what it held)."""
        texts = [node.get_content() for node in nodes]
        empty = [node.node_id for node, text in zip(nodes, texts) if not text.strip()]
        if empty:
            raise ValueError(f"cannot index empty documents: {empty[:5]}")
        todo = []
        for node, text in zip(nodes, texts):
            doc_id = node.ref_doc_id or node.node_id
            if reuse_store and self._store is not None and doc_id in self._store and \
                    self._store.entry(doc_id).text_sha256 == hashlib.sha256(text.encode("utf-8")).hexdigest():
                self._stored[node.node_id] = doc_id
            else:
                todo.append((node, text))
        if not todo:
            return
        if self.cache is not None:  # text storage: compressed when first read (`memory_of`)
            self._outlines.update((node.node_id, self._engine.model.outline(text, rate=self.rate))
                                  for node, text in todo)
            return
        memories = self._compressed([text for _, text in todo])
        if self._store is not None:
            self._store.append([(node.ref_doc_id or node.node_id, text, dict(node.metadata), memory)
                                for (node, text), memory in zip(todo, memories)])
            self._stored.update((node.node_id, node.ref_doc_id or node.node_id) for node, _ in todo)
            return
        for (node, _), memory in zip(todo, memories):
            self._memories[node.node_id] = memory.stored_as(self.storage)

    def _compressed(self, texts: list[str] | list[list[int]]) -> list[CompressedMemory]:
        with self._engine.lock:
            memories = self._engine.model.compress(texts, batch_size=self.batch_size, progress=self._show_progress,
                                                   rate=self.rate)
        self._engine.compressions += len(texts)
        return memories

    def insert_nodes(self, nodes: Sequence[BaseNode], **insert_kwargs: Any) -> None:
        """Insert nodes; a document whose id the index holds already is kept beside it (a node id of its own), as
        LlamaIndex's indexes keep every document inserted (`update_ref_doc` replaces one)."""
        nodes = _distinct(nodes, set(self._index_struct.nodes_dict))
        self._check_store_ids(nodes)
        super().insert_nodes(nodes, **insert_kwargs)

    def _check_store_ids(self, nodes: Sequence[BaseNode]) -> None:
        """A memory store holds one memory per document id: refuse a second document under an id it holds for
        another node, before anything is written (it would supersede the first one's memory)."""
        if self._store is None:
            return
        holder = {doc_id: node_id for node_id, doc_id in self._stored.items()}
        for node in nodes:
            doc_id = node.ref_doc_id or node.node_id
            if holder.setdefault(doc_id, node.node_id) != node.node_id:
                raise ValueError(f"document id {doc_id!r} is given twice, and the memory store {self._store.path} "
                                 "holds one memory per document id: give each document its own id_, or replace "
                                 "it with update_ref_doc")

    def _build_index_from_nodes(self, nodes: Sequence[BaseNode], **kwargs: Any) -> RCCMemoryStruct:
        struct = RCCMemoryStruct()
        self._check_store_ids(nodes)
        if nodes:
            self._compress(nodes)
        for node in nodes:
            struct.add_node(node)
        return struct

    def _insert(self, nodes: Sequence[BaseNode], **kwargs: Any) -> None:
        self._compress(nodes)
        for node in nodes:
            self._index_struct.add_node(node)

    def _delete_node(self, node_id: str, **kwargs: Any) -> None:
        """Forget a document (a store keeps its memory: other indexes may read it)."""
        self._index_struct.delete(node_id)
        self._stored.pop(node_id, None)
        self._outlines.pop(node_id, None)
        memory = self._memories.pop(node_id, None)
        if memory is not None:
            self._window_texts.pop((node_id, memory.source_hash), None)

    def delete_ref_doc(self, ref_doc_id: str, delete_from_docstore: bool = False, **delete_kwargs: Any) -> None:
        """Delete every node of a document (several where documents share the id), as `VectorStoreIndex` does; an
        id the index does not hold deletes nothing and logs a warning, as LlamaIndex's indexes do. (BaseIndex's
        own version skips every other node of a shared id: the docstore shrinks the list it walks.)"""
        info = self.docstore.get_ref_doc_info(ref_doc_id)
        if info is None:
            logger.warning("ref_doc_id %s not found, nothing deleted.", ref_doc_id)
            return
        self.delete_nodes(list(info.node_ids), delete_from_docstore=delete_from_docstore, **delete_kwargs)
        if delete_from_docstore:
            self.docstore.delete_ref_doc(ref_doc_id, raise_error=False)

    @property
    def ref_doc_info(self) -> dict[str, RefDocInfo]:
        node_ids = list(self._index_struct.nodes_dict)
        nodes = self.docstore.get_nodes(node_ids)
        infos: dict[str, RefDocInfo] = {}
        for node in nodes:
            if node.ref_doc_id and (info := self.docstore.get_ref_doc_info(node.ref_doc_id)):
                infos[node.ref_doc_id] = info
        return infos

    def as_retriever(self, **kwargs: Any):
        from rcc_integrations.llama_index.query import RCCMemoryRetriever

        return RCCMemoryRetriever(self, **kwargs)

    def as_query_engine(self, llm: Any = None, **kwargs: Any):
        """A query engine that hands the decoder MEMORY, not pasted node text."""
        from rcc_integrations.llama_index.query import RCCQueryEngine

        return RCCQueryEngine(self, **kwargs)

    def as_chat_engine(self, chat_mode: str | None = None, llm: Any = None, **kwargs: Any):
        """A chat engine whose every turn reads the documents' memory (conversation kept in the template)."""
        from rcc_integrations.llama_index.chat import RCCChatEngine

        return RCCChatEngine(self, **kwargs)

    def embedder(self) -> CachedEmbedding | None:
        """The embedding model that ranks windows with BM25 (`embed_model`, else the one set in LlamaIndex's
        `Settings`, never its OpenAI default), as the ranking's `embed`; None: BM25 alone."""
        model = self._embed_model()
        if model is None:
            return None
        if self._embedding is None or self._embedding[0] is not model:
            self._embedding = (model, CachedEmbedding(self._embed_texts(model)))
        return self._embedding[1]

    def _embed_model(self) -> BaseEmbedding | None:
        return self.embed_model or Settings._embed_model  # set by the user, not resolved to the default

    def _embed_texts(self, model: BaseEmbedding):
        """`model`'s batch embedding, taking the vectors a persisted index kept where `model` made them."""
        if self._vectors is None or self._vectors[0] != embedding_name(model):
            return model.get_text_embedding_batch
        known = self._vectors[1]

        def embed(texts: list[str]) -> list[list[float]]:
            keys = [text_key(text) for text in texts]
            fresh = iter(model.get_text_embedding_batch([t for t, k in zip(texts, keys) if k not in known]))
            return [known[key] if key in known else next(fresh) for key in keys]

        return embed

    # ------------------------------------------------------------------ memory access
    def memory_of(self, node_id: str) -> CompressedMemory:
        """The memory of one document (read from the store, when it holds it), recompressed from its stored text
        if its file or its rows in the store were damaged; with text storage, all its windows (`windows_of`)."""
        if node_id in self._stored:
            try:
                return self._store[self._stored[node_id]].to(self._engine.model.device)
            except MemoryFileError as error:
                warnings.warn(f"memory of {node_id!r} is damaged ({error}); compressing it again", stacklevel=2)
                del self._stored[node_id]
                self._compress([self.docstore.get_node(node_id)], reuse_store=False)
        elif self.cache is not None:
            return CompressedMemory.concat(self.windows_of(node_id, range(self.outline_of(node_id).num_windows)))
        elif node_id not in self._memories:
            self._compress([self.docstore.get_node(node_id)])
        if node_id in self.damaged:
            self.damaged.remove(node_id)
        if node_id in self._stored:
            return self._store[self._stored[node_id]].to(self._engine.model.device)
        return self._memories[node_id]

    def windows_of(self, node_id: str, windows: Sequence[int]) -> list[CompressedMemory]:
        """The memories of some windows of one document. With text storage each window is compressed alone
        (windows are encoded independently: the same states) when a question first reads it, in one batch, and
        kept in the cache, so a question pays for the few windows it reads, never for a whole document."""
        if self.cache is None:
            parts = self.memory_of(node_id).windows()
            return [parts[j] for j in windows]
        model = self._engine.model
        ids = model.window_ids(self.docstore.get_node(node_id).get_content())
        keys = [MemoryCache.key(model.fingerprint, self.rate, "window", ids[j]) for j in windows]
        return self.cache.fetch_many(keys, lambda missing: self._compressed([ids[windows[k]] for k in missing]),
                                     device=model.device)

    def outline_of(self, node_id: str) -> CompressedMemory:
        """A document's memory as ranking reads it: windows, their token counts and texts, slots. With text
        storage its outline (`RCCModel.outline`, no states), so that ranking compresses nothing; else the
        memory itself (`memory_of`)."""
        if self.cache is None:
            return self.memory_of(node_id)
        if node_id not in self._outlines:
            self._outlines[node_id] = self._engine.model.outline(self.docstore.get_node(node_id).get_content(),
                                                                 rate=self.rate)
        return self._outlines[node_id]

    @property
    def node_ids(self) -> list[str]:
        return list(self._index_struct.nodes_dict)

    def window_texts(self, node_id: str) -> list[str]:
        """The text of each encoder window of a document's memory (what a question's reading ranks)."""
        if node_id in self._outlines and self._outlines[node_id].window_texts is not None:
            return self._outlines[node_id].window_texts
        source = self._store.entry(self._stored[node_id]).source_hash if node_id in self._stored \
            else self.outline_of(node_id).source_hash
        key = (node_id, source)
        if key not in self._window_texts:
            self._window_texts[key] = self._engine.model.window_texts(self.docstore.get_node(node_id).get_content())
        return self._window_texts[key]

    def window_node(self, node_id: str, window: int, read: str = "compressed", twin: bool = False) -> TextNode:
        """A node holding one encoder window of a document: its text, the document's metadata with the window
        and how a question reads it (`read`: "expanded", as text, or "compressed", as slots), the document as
        parent (and its source document, so `ref_doc_id` names it). `twin`: the compressed node of a window also
        read as text (`rcc_model.WindowChoice`), under an id of its own, as retrievers keep one node per id."""
        document = self.docstore.get_node(node_id)
        relationships = {NodeRelationship.PARENT: document.as_related_node_info()}
        if document.source_node is not None:
            relationships[NodeRelationship.SOURCE] = document.source_node
        ours = [WINDOW_KEY, READ_KEY]
        suffix = "-slots" if twin else ""
        return TextNode(id_=f"{node_id}#window-{window}{suffix}", text=self.window_texts(node_id)[window],
                        metadata={**document.metadata, WINDOW_KEY: window, READ_KEY: read},
                        excluded_llm_metadata_keys=[*document.excluded_llm_metadata_keys, *ours],
                        excluded_embed_metadata_keys=[*document.excluded_embed_metadata_keys, *ours],
                        relationships=relationships)

    def memory_of_nodes(self, nodes: Sequence[BaseNode]) -> CompressedMemory:
        """The memory that retrieved nodes name, in document order: whole documents, and the windows of
        window nodes (`window_node`) read compressed."""
        return self.reading_of(nodes).memory

    def text_memory_of_nodes(self, nodes: Sequence[BaseNode], alignments: int | None = None
                             ) -> CompressedMemory | MemoryWithText:
        """`memory_of_nodes`, with the text of the windows it holds when an answer will read them at several
        slot alignments (`Engine.realigns`, at `alignments` or the model's `read_alignments`)."""
        reading = self.reading_of(nodes)
        if not self._engine.realigns(reading.memory.num_slots, alignments):
            return reading.memory
        return MemoryWithText(reading.memory, reading.texts or [])

    def reading_of_nodes(self, nodes: Sequence[BaseNode], alignments: int | None = None
                         ) -> CompressedMemory | MemoryViews:
        """What an answer from retrieved nodes reads as slots: `memory_of_nodes`, at `alignments` slot alignments
        (default the model's `read_alignments`; `rcc_model.aligned_views`) when it is no more than the model
        reads well (`Engine.realigns`)."""
        reading = self.reading_of(nodes)
        return self._engine.views(reading.memory, reading.texts, alignments)

    def reading_of(self, nodes: Sequence[BaseNode]) -> Reading:
        """What retrieved nodes say a question reads, in document order: whole documents and the windows of
        compressed window nodes as slots (`memory`, with their `texts`), and the windows of expanded ones as
        text (`expanded`; `context`, which `Reading.prompt` puts before the question)."""
        whole, compressed, expanded = set(), {}, {}
        for node in nodes:
            parent = node.parent_node
            if WINDOW_KEY not in node.metadata or parent is None:
                whole.add(node.node_id)
            else:
                kind = expanded if node.metadata.get(READ_KEY) == "expanded" else compressed
                kind.setdefault(parent.node_id, set()).add(int(node.metadata[WINDOW_KEY]))
        parts: list[CompressedMemory] = []
        reading = Reading(self._engine.model.empty_memory(), [], [], [], [])
        for node_id in self.node_ids:
            if node_id not in whole and node_id not in compressed and node_id not in expanded:
                continue
            outline, texts = self.outline_of(node_id), self.window_texts(node_id)
            shown = [] if node_id in whole else sorted(expanded.get(node_id, ()))  # a document read whole stays whole
            read = range(outline.num_windows) if node_id in whole else sorted(compressed.get(node_id, set()))
            parts += [self.memory_of(node_id)] if node_id in whole else self.windows_of(node_id, read)
            reading.windows.append(list(read))
            reading.scores.append([])
            reading.available.append(outline.num_windows)
            reading.texts += [texts[j] for j in read]
            reading.expanded.append(shown)
            reading.expanded_scores.append([])
            reading.expanded_texts.append([texts[j] for j in shown])
            reading.expanded_tokens += sum(outline.window_tokens[j] for j in shown)
        if parts:
            reading.memory = CompressedMemory.concat(parts)
        return reading

    # ------------------------------------------------------------------ persistence
    def persist(self, persist_dir: str | Path) -> Path:
        """Write docstore, index store, memory files (as `storage`; none for "text", which writes each
        document's windows into the manifest instead) and manifest into `persist_dir`, atomically as a whole
        (`rcc_model.atomic.atomic_folder`): a crash at any point leaves the previous index or the new one
        loadable. Other files in the folder are never touched; a non-empty folder that holds no index of
        this kind is refused (ValueError naming it)."""
        target = Path(persist_dir)
        with atomic_folder(target, KIND, accepts=lambda folder: (folder / MANIFEST).is_file()) as tmp:
            self._storage_context.persist(persist_dir=str(tmp))
            (tmp / MEMORY_FOLDER).mkdir()
            entries, windows = {}, {}
            for node_id in self.node_ids:
                if node_id in self._stored:  # its memory stays in the store
                    continue
                if self.cache is not None:
                    windows[node_id] = windows_entry(self.outline_of(node_id), self.window_texts(node_id))
                    continue
                memory = self.memory_of(node_id)
                name = hashlib.sha256(node_id.encode()).hexdigest()[:32] + ".rccmem"
                path = memory.save(tmp / MEMORY_FOLDER / name, dtype=self.storage)
                entries[node_id] = {"file": name, "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                                    "source_hash": memory.source_hash, "tokens": memory.token_count,
                                    "shape": list(memory.states.shape), "dtype": str(memory.dtype)}
            model = self._engine.model
            manifest = {"format": "rcc-memory-index", "version": 1, "fingerprint": model.fingerprint,
                        "base": model.config.base, "rate": self.rate, "window": model.config.window,
                        "index_id": self.index_id, "storage": self.storage, "entries": entries, "windows": windows}
            if self._store is not None:
                manifest |= {"store": str(self._store.path.resolve()), "stored": dict(self._stored)}
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
            if (embedder := self.embedder()) is not None:  # what ranking embedded, so a reload does not again
                texts = list(dict.fromkeys(t for node_id in self.node_ids for t in self.window_texts(node_id)))
                save_vectors(tmp / VECTORS, self._embed_model(), texts, embedder(texts))
        return target

    @classmethod
    def load_from_disk(cls, persist_dir: str | Path, model: str | Path | RCCModel = "default",
                       **kwargs: Any) -> RCCMemoryIndex:
        from llama_index.core import load_index_from_storage

        recover(persist_dir)  # finish a persist interrupted after it committed
        try:
            storage_context = StorageContext.from_defaults(persist_dir=str(persist_dir))
        except (ValueError, KeyError, TypeError, AttributeError) as e:  # JSONDecodeError is a ValueError
            raise ValueError(f"{damaged_store(Path(persist_dir))} is damaged ({type(e).__name__}: {e}): restore "
                             "the folder, or build the index again and persist it") from e
        return load_index_from_storage(storage_context, model=model, persist_dir=persist_dir, **kwargs)

    def _load_memories(self, persist_dir: Path | None, manifest: dict | None, requested_rate: int | None) -> None:
        """Read the memory files named by the manifest; refuse another model's (or another rate's than a
        `requested_rate`; without one the index adopts the rate it was built at), report damaged ones (they
        are rebuilt from the stored text on first use) and keep the rest."""
        if manifest is None:
            warnings.warn("no RCC memory manifest given: documents will be compressed again on first use",
                          stacklevel=3)
            return
        model = self._engine.model
        if manifest.get("fingerprint") != model.fingerprint:
            raise MemoryMismatchError(
                f"{persist_dir} was built by model {manifest.get('fingerprint')} (base {manifest.get('base')!r}); "
                f"this is model {model.fingerprint}: load it with that model, or rebuild the index"
            )
        built_at = manifest.get("rate", self.rate)
        if requested_rate is not None and built_at != requested_rate:
            raise MemoryMismatchError(f"{persist_dir} holds memory compressed at rate {built_at}, not "
                                      f"{requested_rate}: load it without rate=, or rebuild the index at that rate")
        self.rate = self._engine.model.config.check_rate(built_at)
        self._vectors = read_vectors(persist_dir / VECTORS)
        if self.cache is not None:
            self._outlines.update(read_outlines(manifest, model.empty_memory(), self.rate))
            return  # memory files, from a persist at another storage, are not read: text storage holds none
        recast = storage_of(None, manifest, model) != self.storage  # files of another storage: held as this one's
        for node_id, doc_id in manifest.get("stored", {}).items():
            if self._store is not None and doc_id in self._store:
                self._stored[node_id] = doc_id
            else:
                self.damaged.append(node_id)
                warnings.warn(f"the store {manifest.get('store')} no longer holds {doc_id!r}; it will be compressed "
                              "again from the stored text when first needed", stacklevel=3)
        for node_id, entry in manifest["entries"].items():
            path = confined(persist_dir / MEMORY_FOLDER, entry["file"], source=persist_dir / MANIFEST)
            try:
                if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != entry["sha256"]:
                    raise MemoryFileError(f"{path} is missing or does not match its manifest checksum")
                memory = CompressedMemory.load(path, device=model.device)
                self._memories[node_id] = memory.stored_as(self.storage) if recast else memory
            except MemoryFileError as error:
                self.damaged.append(node_id)
                warnings.warn(f"memory of {node_id!r} is damaged ({error}); it will be recompressed from the "
                              "stored text when first needed", stacklevel=3)


def _distinct(nodes: Sequence[BaseNode], taken: set[str]) -> list[BaseNode]:
    """`nodes` with the whole-document nodes (`WholeDocuments`) whose id is `taken` or repeated renamed
    "<id>:memory:2", ":3", ...: documents that share an id are all kept, as LlamaIndex keeps them."""
    distinct = []
    for node in nodes:
        if node.node_id in taken and node.node_id.endswith(":memory"):
            base = node.node_id
            node.id_ = next(f"{base}:{k}" for k in range(2, len(taken) + 3) if f"{base}:{k}" not in taken)
        taken.add(node.node_id)
        distinct.append(node)
    return distinct


def _open_store(path: str) -> MemoryStore | None:
    """The store a persisted index reads, or None (with a warning) when it is gone or damaged: its documents
    are then compressed again from the stored text on first use."""
    try:
        return MemoryStore(path)
    except MemoryFileError as error:
        warnings.warn(f"the memory store of this index is unreadable ({error}); its documents will be compressed "
                      "again from the stored text when first needed", stacklevel=4)
        return None


def _check_store(store: MemoryStore, model: RCCModel, rate: int) -> None:
    if store.settings.fingerprint != model.fingerprint or store.settings.rate != rate:
        raise MemoryMismatchError(
            f"{store.path} holds memory of model {store.settings.fingerprint} at rate {store.settings.rate}; this is "
            f"model {model.fingerprint} at rate {rate}: use the model that made the store, or compress it again")


INDEX_STRUCT_TYPE_TO_INDEX_STRUCT_CLASS[STRUCT_TYPE] = RCCMemoryStruct  # type: ignore[index]
INDEX_STRUCT_TYPE_TO_INDEX_CLASS[STRUCT_TYPE] = RCCMemoryIndex  # type: ignore[index]
