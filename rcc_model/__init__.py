"""Recurrent Context Compression (RCC) over Hugging Face causal LMs.

The public API is what `__all__` lists: the model (`RCCModel`), its memory (`CompressedMemory`), generation,
reading and reconstruction helpers, structured output, and what the LangChain and LlamaIndex integrations use.
Public names load lazily, so that `import rcc_model` (and `rcc --help`) does not import torch.
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

try:
    __version__ = version("rcc")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0"

_EXPORTS = {
    # the model and its configuration
    "RCCModel": "rcc_model.modeling",
    "RCCConfig": "rcc_model.config",
    # compressed memory
    "CompressedMemory": "rcc_model.memory",
    "MemoryFileError": "rcc_model.memory",
    "MemoryMismatchError": "rcc_model.memory",
    "MemoryCache": "rcc_model.memory_cache",
    "MemoryStore": "rcc_model.store",
    "MemoryViews": "rcc_model.memory",
    # generation
    "DecodeState": "rcc_model.decoding",
    "SamplingParams": "rcc_model.decoding",
    "GenerationInfo": "rcc_model.generation",
    "PART_SEPARATOR": "rcc_model.generation",
    "answer_in_parts": "rcc_model.generation",
    # how reconstruction decodes each window
    "ANCHORED_GREEDY": "rcc_model.beam_search",
    "GREEDY": "rcc_model.beam_search",
    "Search": "rcc_model.beam_search",
    # reading part of a memory
    "aligned_views": "rcc_model.reading",
    "MemoryWithText": "rcc_model.reading",
    "read_within": "rcc_model.reading",
    "Reading": "rcc_model.reading",
    "reading_for": "rcc_model.reading",
    "ReadingPolicy": "rcc_model.reading",
    "WindowChoice": "rcc_model.reading",
    "with_context": "rcc_model.prompts",
    "question_parts": "rcc_model.prompts",
    "with_question": "rcc_model.prompts",
    "reconstruct_windows": "rcc_model.reconstruction",
    "reconstruction_prompt": "rcc_model.reconstruction",
    # structured output and tool calls
    "Cursor": "rcc_model.structured",
    "generate_json": "rcc_model.structured",
    "generate_tool_call": "rcc_model.structured",
    "prefers_tool_call": "rcc_model.structured",
    "SchemaDecoder": "rcc_model.structured",
    "text_only": "rcc_model.structured",
    "UnsupportedSchemaError": "rcc_model.json_schema",
    # sample documents with facts hidden in them
    "chronicle": "rcc_model.samples",
    "passkey_document": "rcc_model.samples",
    # checkpoints and files
    "describe": "rcc_model.checkpoint",
    "load_tokenizer_only": "rcc_model.checkpoint",
    "rate_folders": "rcc_model.checkpoint",
    "resolve_checkpoint": "rcc_model.checkpoint",
    "atomic_folder": "rcc_model.atomic",
    "confined": "rcc_model.atomic",
    "recover": "rcc_model.atomic",
}

__all__ = [*sorted(_EXPORTS), "__version__"]

if TYPE_CHECKING:
    from rcc_model.atomic import atomic_folder as atomic_folder
    from rcc_model.atomic import confined as confined
    from rcc_model.atomic import recover as recover
    from rcc_model.beam_search import ANCHORED_GREEDY as ANCHORED_GREEDY
    from rcc_model.beam_search import GREEDY as GREEDY
    from rcc_model.beam_search import Search as Search
    from rcc_model.checkpoint import describe as describe
    from rcc_model.checkpoint import load_tokenizer_only as load_tokenizer_only
    from rcc_model.checkpoint import rate_folders as rate_folders
    from rcc_model.checkpoint import resolve_checkpoint as resolve_checkpoint
    from rcc_model.config import RCCConfig as RCCConfig
    from rcc_model.decoding import DecodeState as DecodeState
    from rcc_model.decoding import SamplingParams as SamplingParams
    from rcc_model.generation import PART_SEPARATOR as PART_SEPARATOR
    from rcc_model.generation import GenerationInfo as GenerationInfo
    from rcc_model.generation import answer_in_parts as answer_in_parts
    from rcc_model.json_schema import UnsupportedSchemaError as UnsupportedSchemaError
    from rcc_model.memory import CompressedMemory as CompressedMemory
    from rcc_model.memory import MemoryFileError as MemoryFileError
    from rcc_model.memory import MemoryMismatchError as MemoryMismatchError
    from rcc_model.memory import MemoryViews as MemoryViews
    from rcc_model.memory_cache import MemoryCache as MemoryCache
    from rcc_model.modeling import RCCModel as RCCModel
    from rcc_model.prompts import question_parts as question_parts
    from rcc_model.prompts import with_context as with_context
    from rcc_model.prompts import with_question as with_question
    from rcc_model.reading import MemoryWithText as MemoryWithText
    from rcc_model.reading import Reading as Reading
    from rcc_model.reading import ReadingPolicy as ReadingPolicy
    from rcc_model.reading import WindowChoice as WindowChoice
    from rcc_model.reading import aligned_views as aligned_views
    from rcc_model.reading import read_within as read_within
    from rcc_model.reading import reading_for as reading_for
    from rcc_model.reconstruction import reconstruct_windows as reconstruct_windows
    from rcc_model.reconstruction import reconstruction_prompt as reconstruction_prompt
    from rcc_model.samples import chronicle as chronicle
    from rcc_model.samples import passkey_document as passkey_document
    from rcc_model.store import MemoryStore as MemoryStore
    from rcc_model.structured import Cursor as Cursor
    from rcc_model.structured import SchemaDecoder as SchemaDecoder
    from rcc_model.structured import generate_json as generate_json
    from rcc_model.structured import generate_tool_call as generate_tool_call
    from rcc_model.structured import prefers_tool_call as prefers_tool_call
    from rcc_model.structured import text_only as text_only


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'rcc_model' has no attribute {name!r}")
