"""LangChain's standard unit suite for chat models (langchain-tests, pinned in the dev extra)."""

from langchain_tests.unit_tests import ChatModelUnitTests

from rcc_integrations.langchain import ChatRCC


class TestChatRCCUnit(ChatModelUnitTests):
    @property
    def chat_model_class(self) -> type[ChatRCC]:
        return ChatRCC

    @property
    def chat_model_params(self) -> dict:
        return {"model": "default"}

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
    def supported_usage_metadata_details(self) -> dict:
        return {"invoke": ["cache_read_input", "cache_creation_input"],
                "stream": ["cache_read_input", "cache_creation_input"]}
