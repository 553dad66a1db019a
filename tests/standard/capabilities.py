"""What ChatRCC supports, declared once for both of LangChain's standard suites."""

from rcc_integrations.langchain import ChatRCC


class ChatRCCCapabilities:
    @property
    def chat_model_class(self) -> type[ChatRCC]:
        return ChatRCC

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
