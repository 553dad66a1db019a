"""What a persisted `RCCMemoryIndex` keeps beside LlamaIndex's own stores, read and checked here: the manifest
(model, rate, storage, memory files), the windows of text storage (what ranking reads without memory), and the
embeddings of window texts (so that a reloaded index does not embed them again).

Layout of the persist folder:

    docstore.json, index_store.json, ...   LlamaIndex's stores: the text and the structure
    rcc_manifest.json                       model fingerprint, rate, window, storage; "entries": a memory file per
                                            document (sha256, shape); "windows" (text storage): per document its
                                            slots, window_tokens, token_count, source_hash, window_texts
    rcc_memory/<hash>.rccmem                memory files (`CompressedMemory.save` at the storage dtype); none for text
    rcc_embeddings.safetensors              "vectors" (N, D) float32, one per distinct window text, with metadata
                                            naming the embedding model and each text's sha256 (only with one set)
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import torch
from llama_index.core.base.embeddings.base import BaseEmbedding
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from rcc_model import CompressedMemory, MemoryFileError, RCCModel

MANIFEST = "rcc_manifest.json"
VECTORS = "rcc_embeddings.safetensors"
STORAGES = ("int8", "bfloat16", "float16", "float32", "text")  # how `persist` keeps memory
DEFAULT_STORAGE = "text"  # within the vector index's bytes; a question compresses only the windows it reads


def storage_of(storage: str | None, manifest: dict | None, model: RCCModel, with_store: bool = False) -> str:
    """The storage an index persists with: `storage` if given, else the persisted index's (the memory dtype
    for an index persisted before `storage` existed, which kept the states' dtype), else `DEFAULT_STORAGE`
    ("int8" `with_store`: a memory store holds memory, which text storage has none of)."""
    if storage is None and manifest is not None:
        storage = manifest.get("storage", model.config.memory_dtype)
    elif storage is None:
        storage = "int8" if with_store else DEFAULT_STORAGE
    if storage not in STORAGES:
        raise ValueError(f"`storage` must be one of {STORAGES}, got {storage!r}")
    return storage


def read_manifest(persist_dir: str | Path | None) -> dict | None:
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
        if manifest.get("storage", DEFAULT_STORAGE) not in STORAGES:
            raise ValueError(f"storage is {manifest.get('storage')!r}, not one of {STORAGES}")
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise MemoryFileError(f"{path} is damaged ({type(e).__name__}: {e}): restore the folder, or build the "
                              "index again and persist it") from e
    return manifest


def damaged_store(persist_dir: Path) -> Path:
    """The first of LlamaIndex's JSON stores in `persist_dir` that does not parse (else the docstore)."""
    for path in sorted(persist_dir.glob("*.json")):
        try:
            json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError):
            return path
    return persist_dir / "docstore.json"


def windows_entry(outline: CompressedMemory, texts: list[str]) -> dict:
    """What the manifest of a text-storage index keeps of a document's memory (`read_outlines` reads it)."""
    return {"slots": outline.num_slots, "window_tokens": outline.window_tokens, "token_count": outline.token_count,
            "source_hash": outline.source_hash, "window_texts": texts}


def read_outlines(manifest: dict, empty: CompressedMemory, rate: int) -> dict[str, CompressedMemory]:
    """The outlines (`RCCModel.outline`: memories without states) that a text-storage manifest lists, shaped
    like `empty` (the model's empty memory) at `rate`; a damaged one is left out, with a warning: the index
    computes it again from the stored text when first needed."""
    outlines = {}
    for node_id, entry in (manifest.get("windows") or {}).items():
        try:
            if not (all(type(n) is int for n in entry["window_tokens"])
                    and all(isinstance(t, str) for t in entry["window_texts"])):
                raise TypeError("window_tokens must be integers and window_texts strings")
            shape = (int(entry["slots"]), *empty.states.shape[1:])
            outlines[node_id] = replace(  # checks that the slots are what the windows need
                empty, states=torch.empty(shape, dtype=empty.dtype, device="meta"), rate=rate,
                window_tokens=list(entry["window_tokens"]), token_count=int(entry["token_count"]),
                source_hash=str(entry["source_hash"]), window_texts=list(entry["window_texts"]))
        except (KeyError, TypeError, ValueError) as error:
            warnings.warn(f"the windows of {node_id!r} in the manifest are damaged ({type(error).__name__}: "
                          f"{error}); they are computed again from the stored text", stacklevel=5)
    return outlines


def embedding_name(model: BaseEmbedding) -> str:
    """Which embedding model made vectors: its class and `model_name` (vectors of another are not reused)."""
    return f"{model.class_name()}:{model.model_name}"


def text_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def save_vectors(path: Path, model: BaseEmbedding, texts: Sequence[str], vectors: Sequence[Sequence[float]]) -> None:
    """Write the embeddings of window `texts` (made by `model`) to `path`, a file of the staging folder."""
    save_file({"vectors": torch.tensor(vectors, dtype=torch.float32).reshape(len(texts), -1)}, str(path),
              metadata={"rcc": json.dumps({"model": embedding_name(model), "texts": [text_key(t) for t in texts]})})


def read_vectors(path: Path) -> tuple[str, dict[str, list[float]]] | None:
    """(embedding model name, text sha256 -> vector) of a vectors file; None without one. A damaged one is
    ignored with a warning: the index embeds the windows again."""
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            header = json.loads((f.metadata() or {})["rcc"])
            vectors = f.get_tensor("vectors")
        keys = header["texts"]
        if not isinstance(header["model"], str) or vectors.dim() != 2 or len(keys) != vectors.shape[0]:
            raise ValueError(f"{len(keys)} texts for vectors of shape {tuple(vectors.shape)}")
        return header["model"], dict(zip(map(str, keys), vectors.tolist()))
    except (SafetensorError, OSError, KeyError, TypeError, ValueError) as error:
        warnings.warn(f"{path} is damaged ({type(error).__name__}: {error}); window texts are embedded again",
                      stacklevel=5)
        return None
