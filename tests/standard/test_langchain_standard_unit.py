"""LangChain's standard unit suite for chat models (langchain-tests, pinned in the dev extra)."""

from langchain_tests.unit_tests import ChatModelUnitTests

from tests.standard.capabilities import ChatRCCCapabilities


class TestChatRCCUnit(ChatRCCCapabilities, ChatModelUnitTests):
    @property
    def chat_model_params(self) -> dict:
        return {"model": "default"}
