"""LlamaIndex integration: `RCCLLM` and `RCCMemoryIndex` (documents compressed whole into memory)."""

from rcc_integrations._runtime import StreamStopped
from rcc_integrations.llama_index.index import RCCMemoryIndex
from rcc_integrations.llama_index.llm import RCCLLM

__all__ = ["RCCLLM", "RCCMemoryIndex", "StreamStopped"]
