"""`RCCMemoryIndex`: each document compressed whole into RCC memory, instead of chunked and embedded.

Memory tensors live in side files (safetensors) under the persist folder with a manifest; LlamaIndex's own
docstore and index store hold the text and the structure, so a damaged memory file can always be rebuilt
from the text.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llama_index.core.data_structs.data_structs import IndexDict
from llama_index.core.data_structs.registry import INDEX_STRUCT_TYPE_TO_INDEX_STRUCT_CLASS
from llama_index.core.indices.base import BaseIndex
from llama_index.core.indices.registry import INDEX_STRUCT_TYPE_TO_INDEX_CLASS
from llama_index.core.schema import BaseNode, Document, NodeRelationship, TextNode, TransformComponent
from llama_index.core.storage.docstore.types import RefDocInfo
from llama_index.core.storage.storage_context import StorageContext

from rcc_integrations._runtime import Engine, engine_for
from rcc_model import (
    CompressedMemory,
    MemoryFileError,
    MemoryMismatchError,
    MemoryViews,
    MemoryWithText,
    RCCModel,
    atomic_folder,
    confined,
    recover,
)

STRUCT_TYPE = "rcc_memory"
WINDOW_KEY = "rcc_window"  # metadata of a window node: which encoder window of its parent document it holds
MANIFEST = "rcc_manifest.json"
MEMORY_FOLDER = "rcc_memory"
KIND = "rcc-memory-index"


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
            print(index.as_query_engine().query("Who signed the March report?"))
            index.persist("storage/")
            index = RCCMemoryIndex.load_from_disk("storage/")
    """

    index_struct_cls = RCCMemoryStruct

    def __init__(self, nodes: Sequence[BaseNode] | None = None, index_struct: RCCMemoryStruct | None = None,
                 storage_context: StorageContext | None = None, model: str | Path | RCCModel = "default",
                 rate: int | None = None, memory_budget: int | None = None, batch_size: int = 8,
                 persist_dir: str | Path | None = None, show_progress: bool = False, **kwargs: Any):
        if index_struct is not None and persist_dir is not None and recover(persist_dir):
            # a persist interrupted after it committed, just finished: what LlamaIndex read before may mix versions
            storage_context = StorageContext.from_defaults(persist_dir=str(persist_dir))
            index_struct = storage_context.index_store.get_index_struct(index_struct.index_id)
        manifest = _read_manifest(persist_dir) if index_struct is not None else None
        built_at = manifest.get("rate") if manifest is not None and rate is None else None
        self._engine: Engine = engine_for(model, rate or built_at)  # a rate's own weights, where the model has them
        self.rate = self._engine.model.config.check_rate(rate)  # a loaded index keeps the rate it was built at
        self._memories: dict[str, CompressedMemory] = {}
        self._window_texts: dict[tuple[str, str], list[str]] = {}
        self.memory_budget = memory_budget
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
        return cls(nodes=WholeDocuments()(documents), storage_context=storage_context,
                   show_progress=show_progress, **kwargs)

    # ------------------------------------------------------------------ what BaseIndex asks for
    @property
    def engine(self) -> Engine:
        return self._engine

    def _compress(self, nodes: Sequence[BaseNode]) -> None:
        texts = [node.get_content() for node in nodes]
        empty = [node.node_id for node, text in zip(nodes, texts) if not text.strip()]
        if empty:
            raise ValueError(f"cannot index empty documents: {empty[:5]}")
        with self._engine.lock:
            memories = self._engine.model.compress(texts, batch_size=self.batch_size, progress=self._show_progress,
                                                   rate=self.rate)
        self._engine.compressions += len(texts)
        for node, memory in zip(nodes, memories):
            self._memories[node.node_id] = memory

    def _build_index_from_nodes(self, nodes: Sequence[BaseNode], **kwargs: Any) -> RCCMemoryStruct:
        struct = RCCMemoryStruct()
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
        self._index_struct.delete(node_id)
        memory = self._memories.pop(node_id, None)
        if memory is not None:
            self._window_texts.pop((node_id, memory.source_hash), None)

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

    # ------------------------------------------------------------------ memory access
    def memory_of(self, node_id: str) -> CompressedMemory:
        """The memory of one document, recompressed from its stored text if its file was damaged."""
        if node_id not in self._memories:
            self._compress([self.docstore.get_node(node_id)])
            if node_id in self.damaged:
                self.damaged.remove(node_id)
        return self._memories[node_id]

    @property
    def node_ids(self) -> list[str]:
        return list(self._index_struct.nodes_dict)

    def window_texts(self, node_id: str) -> list[str]:
        """The text of each encoder window of a document's memory (what a question's reading ranks)."""
        key = (node_id, self.memory_of(node_id).source_hash)
        if key not in self._window_texts:
            self._window_texts[key] = self._engine.model.window_texts(self.docstore.get_node(node_id).get_content())
        return self._window_texts[key]

    def window_node(self, node_id: str, window: int) -> TextNode:
        """A node holding one encoder window of a document: its text, the document's metadata, the document
        as parent (and its source document, so `ref_doc_id` names it)."""
        document = self.docstore.get_node(node_id)
        relationships = {NodeRelationship.PARENT: document.as_related_node_info()}
        if document.source_node is not None:
            relationships[NodeRelationship.SOURCE] = document.source_node
        return TextNode(id_=f"{node_id}#window-{window}", text=self.window_texts(node_id)[window],
                        metadata={**document.metadata, WINDOW_KEY: window},
                        excluded_llm_metadata_keys=[*document.excluded_llm_metadata_keys, WINDOW_KEY],
                        excluded_embed_metadata_keys=[*document.excluded_embed_metadata_keys, WINDOW_KEY],
                        relationships=relationships)

    def memory_of_nodes(self, nodes: Sequence[BaseNode]) -> CompressedMemory:
        """The memory that retrieved nodes name, in document order: whole documents, and the windows of
        window nodes (`window_node`)."""
        return self._read(nodes)[0]

    def text_memory_of_nodes(self, nodes: Sequence[BaseNode], alignments: int | None = None
                             ) -> CompressedMemory | MemoryWithText:
        """`memory_of_nodes`, with the text of the windows it holds when an answer will read them at several
        slot alignments (`Engine.realigns`, at `alignments` or the model's `read_alignments`)."""
        memory, read = self._read(nodes)
        if not self._engine.realigns(memory.num_slots, alignments):
            return memory
        return MemoryWithText(memory, [self.window_texts(node_id)[j] for node_id, js in read for j in js])

    def reading_of_nodes(self, nodes: Sequence[BaseNode], alignments: int | None = None
                         ) -> CompressedMemory | MemoryViews:
        """What an answer from retrieved nodes reads: `memory_of_nodes`, at `alignments` slot alignments
        (default the model's `read_alignments`; `rcc_model.aligned_views`) when it is no more than the model
        reads well (`Engine.realigns`)."""
        read = self.text_memory_of_nodes(nodes, alignments)
        return self._engine.views(read.memory, read.texts, alignments) if isinstance(read, MemoryWithText) else read

    def _read(self, nodes: Sequence[BaseNode]) -> tuple[CompressedMemory, list[tuple[str, Sequence[int]]]]:
        """(memory of `nodes` in document order, the (document, windows) it was taken from)."""
        wanted: dict[str, set[int] | None] = {}
        for node in nodes:
            parent = node.parent_node
            if WINDOW_KEY not in node.metadata or parent is None:
                wanted[node.node_id] = None
            elif wanted.get(parent.node_id, set()) is not None:  # a document wanted whole stays whole
                wanted.setdefault(parent.node_id, set()).add(int(node.metadata[WINDOW_KEY]))
        parts: list[CompressedMemory] = []
        read: list[tuple[str, Sequence[int]]] = []
        for node_id in self.node_ids:
            if node_id in wanted:
                memory, windows = self.memory_of(node_id), wanted[node_id]
                chosen = range(memory.num_windows) if windows is None else sorted(windows)
                parts += [memory] if windows is None else [memory.windows()[j] for j in chosen]
                read.append((node_id, chosen))
        return (CompressedMemory.concat(parts), read) if parts else (self._engine.model.empty_memory(), [])

    # ------------------------------------------------------------------ persistence
    def persist(self, persist_dir: str | Path) -> Path:
        """Write docstore, index store, memory files and manifest into `persist_dir`, atomically as a whole
        (`rcc_model.atomic.atomic_folder`): a crash at any point leaves the previous index or the new one
        loadable. Other files in the folder are never touched; a non-empty folder that holds no index of
        this kind is refused (ValueError naming it)."""
        target = Path(persist_dir)
        with atomic_folder(target, KIND, accepts=lambda folder: (folder / MANIFEST).is_file()) as tmp:
            self._storage_context.persist(persist_dir=str(tmp))
            (tmp / MEMORY_FOLDER).mkdir()
            entries = {}
            for node_id in self.node_ids:
                memory = self.memory_of(node_id)
                name = hashlib.sha256(node_id.encode()).hexdigest()[:32] + ".rccmem"
                path = memory.save(tmp / MEMORY_FOLDER / name)
                entries[node_id] = {"file": name, "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                                    "source_hash": memory.source_hash, "tokens": memory.token_count,
                                    "shape": list(memory.states.shape), "dtype": str(memory.dtype)}
            model = self._engine.model
            manifest = {"format": "rcc-memory-index", "version": 1, "fingerprint": model.fingerprint,
                        "base": model.config.base, "rate": self.rate, "window": model.config.window,
                        "index_id": self.index_id, "entries": entries}
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
        return target

    @classmethod
    def load_from_disk(cls, persist_dir: str | Path, model: str | Path | RCCModel = "default",
                       **kwargs: Any) -> RCCMemoryIndex:
        from llama_index.core import load_index_from_storage

        recover(persist_dir)  # finish a persist interrupted after it committed
        try:
            storage_context = StorageContext.from_defaults(persist_dir=str(persist_dir))
        except (ValueError, KeyError, TypeError, AttributeError) as e:  # JSONDecodeError is a ValueError
            raise ValueError(f"{_damaged_store(Path(persist_dir))} is damaged ({type(e).__name__}: {e}): restore "
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
        for node_id, entry in manifest["entries"].items():
            path = confined(persist_dir / MEMORY_FOLDER, entry["file"], source=persist_dir / MANIFEST)
            try:
                if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != entry["sha256"]:
                    raise MemoryFileError(f"{path} is missing or does not match its manifest checksum")
                self._memories[node_id] = CompressedMemory.load(path, device=model.device)
            except MemoryFileError as error:
                self.damaged.append(node_id)
                warnings.warn(f"memory of {node_id!r} is damaged ({error}); it will be recompressed from the "
                              "stored text when first needed", stacklevel=3)


def _read_manifest(persist_dir: str | Path | None) -> dict | None:
    """A persisted index's manifest (which model built it, at which rate, its memory files), read before the
    model loads so that a rate's own weights can be chosen; None without one. A damaged one raises
    `MemoryFileError` naming it."""
    path = Path(persist_dir) / MANIFEST if persist_dir else None
    if path is None or not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        if manifest.get("format") != "rcc-memory-index":
            raise ValueError(f"format is {manifest.get('format')!r}, not 'rcc-memory-index'")
        for node_id, entry in manifest["entries"].items():
            if not isinstance(node_id, str) or not all(isinstance(entry[k], str) for k in ("file", "sha256")):
                raise TypeError(f"entry {node_id!r} needs the strings 'file' and 'sha256'")
        if not isinstance(manifest.get("rate", 0), int):
            raise TypeError(f"rate must be an integer, got {manifest.get('rate')!r}")
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise MemoryFileError(f"{path} is damaged ({type(e).__name__}: {e}): restore the folder, or build the "
                              "index again and persist it") from e
    return manifest


def _damaged_store(persist_dir: Path) -> Path:
    """The first of LlamaIndex's JSON stores in `persist_dir` that does not parse (else the docstore)."""
    for path in sorted(persist_dir.glob("*.json")):
        try:
            json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError):
            return path
    return persist_dir / "docstore.json"


INDEX_STRUCT_TYPE_TO_INDEX_STRUCT_CLASS[STRUCT_TYPE] = RCCMemoryStruct  # type: ignore[index]
INDEX_STRUCT_TYPE_TO_INDEX_CLASS[STRUCT_TYPE] = RCCMemoryIndex  # type: ignore[index]
