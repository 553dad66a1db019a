"""LangChain integration: `RCCChatModel`, also exported as `ChatRCC`."""

from rcc_integrations._runtime import StreamStopped
from rcc_integrations.langchain.chat_models import ChatRCC, RCCChatModel

__all__ = ["ChatRCC", "RCCChatModel", "StreamStopped"]
