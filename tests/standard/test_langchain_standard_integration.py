"""LangChain's standard integration suite, against the REAL packaged RCC model (SmolLM2 base, CPU).

About 50 tests that each generate with the real model: too slow for every CI run on 2 cores, so opt-in:
    python -m pytest -m standard_integration tests/standard
"""

import pytest
from langchain_tests.integration_tests import ChatModelIntegrationTests

from rcc_integrations.langchain import ChatRCC


@pytest.mark.standard_integration
class TestChatRCCIntegration(ChatModelIntegrationTests):
    @property
    def chat_model_class(self) -> type[ChatRCC]:
        return ChatRCC

    @property
    def chat_model_params(self) -> dict:
        # A tool call on every user turn and a text answer after each tool result: the dependable agent
        # policy for a 135M model (see RCCChatModel.tool_call_margin).
        return {"model": "default", "tool_call_margin": float("inf"), "max_tokens": 48}

    @property
    def has_tool_calling(self) -> bool:
        return True

    @property
    def has_tool_choice(self) -> bool:
        return True

    @property
    def has_structured_output(self) -> bool:
        return True

    @property
    def returns_usage_metadata(self) -> bool:
        return True

    @property
    def supports_json_mode(self) -> bool:
        return False  # structured output is schema-constrained; there is no free-form JSON mode

    @property
    def supported_usage_metadata_details(self) -> dict:
        return {"invoke": ["cache_read_input", "cache_creation_input"],
                "stream": ["cache_read_input", "cache_creation_input"]}
