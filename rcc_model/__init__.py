"""Recurrent Context Compression (RCC) over Hugging Face causal LMs.

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
    "CompressedMemory": "rcc_model.memory",
    "DecodeState": "rcc_model.decoding",
    "GenerationInfo": "rcc_model.generation",
    "MemoryFileError": "rcc_model.memory",
    "MemoryMismatchError": "rcc_model.memory",
    "MemoryViews": "rcc_model.memory",
    "RCCConfig": "rcc_model.config",
    "RCCModel": "rcc_model.modeling",
    "SamplingParams": "rcc_model.decoding",
}

__all__ = [*sorted(_EXPORTS), "__version__"]

if TYPE_CHECKING:
    from rcc_model.config import RCCConfig as RCCConfig
    from rcc_model.decoding import DecodeState as DecodeState
    from rcc_model.decoding import SamplingParams as SamplingParams
    from rcc_model.generation import GenerationInfo as GenerationInfo
    from rcc_model.memory import CompressedMemory as CompressedMemory
    from rcc_model.memory import MemoryFileError as MemoryFileError
    from rcc_model.memory import MemoryMismatchError as MemoryMismatchError
    from rcc_model.memory import MemoryViews as MemoryViews
    from rcc_model.modeling import RCCModel as RCCModel


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'rcc_model' has no attribute {name!r}")
