"""LangChain's standard integration suite, against the REAL packaged RCC model (SmolLM2 base, CPU).

About 50 tests that each generate with the real model: too slow for every CI run on 2 cores, so opt-in:
    python -m pytest -m standard_integration tests/standard
"""

import pytest
from langchain_tests.integration_tests import ChatModelIntegrationTests

from tests.standard.capabilities import ChatRCCCapabilities


@pytest.mark.standard_integration
class TestChatRCCIntegration(ChatRCCCapabilities, ChatModelIntegrationTests):
    @property
    def chat_model_params(self) -> dict:
        # A tool call on every user turn and a text answer after each tool result: the dependable agent
        # policy for a 135M model (see RCCChatModel.tool_call_margin).
        return {"model": "default", "tool_call_margin": float("inf"), "max_tokens": 48}
