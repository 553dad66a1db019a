"""LlamaIndex integration: `RCCLLM` (the memory index follows)."""

from rcc_integrations.llama_index.llm import RCCLLM

__all__ = ["RCCLLM"]
