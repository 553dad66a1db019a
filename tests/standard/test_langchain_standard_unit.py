"""LangChain's standard unit suite for chat models (langchain-tests, pinned in the dev extra)."""

from langchain_tests.unit_tests import ChatModelUnitTests

from tests.standard.capabilities import ChatRCCCapabilities


class TestChatRCCUnit(ChatRCCCapabilities, ChatModelUnitTests):
    @property
    def chat_model_params(self) -> dict:
        # The defaults. `max_tokens` stays out: test_standard_params calls ChatRCC(max_tokens=10,
        # **chat_model_params), a duplicate keyword (TypeError) for any model whose params name it.
        return {"model": "default"}
