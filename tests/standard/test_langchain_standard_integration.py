"""LangChain's standard integration suite, against the REAL packaged RCC model (SmolLM2 base, CPU).

About 50 tests that each generate with the real model (about 3 minutes on 2 cores); run them alone with
    python -m pytest -m standard_integration tests/standard
"""

import pytest
from langchain_core.documents import Document
from langchain_core.messages import AIMessage
from langchain_tests.integration_tests import ChatModelIntegrationTests

from rcc_integrations.langchain import ChatRCC
from rcc_model.samples import chronicle
from tests.standard.capabilities import ChatRCCCapabilities


def _invoke(llm: ChatRCC, document: Document, stream: bool) -> AIMessage:
    if not stream:
        return llm.invoke("What is the document about?", memory=[document])
    chunks = list(llm.stream("What is the document about?", memory=[document]))
    total = chunks[0]
    for chunk in chunks[1:]:
        total += chunk
    return total


@pytest.mark.standard_integration
class TestChatRCCIntegration(ChatRCCCapabilities, ChatModelIntegrationTests):
    @property
    def chat_model_params(self) -> dict:
        return {"model": "default", "max_tokens": 48}  # the defaults a user gets, with shorter answers

    def _usage_model(self) -> ChatRCC:
        """The model the cache-usage tests answer with: they read the usage, not the answer, so a short one from
        the stored memory alone (one slot alignment)."""
        return ChatRCC(**{**self.chat_model_params, "max_tokens": 8, "read_alignments": 1})

    def invoke_with_cache_creation_input(self, *, stream: bool = False) -> AIMessage:
        """A document compressed for the first time: its tokens are reported as cache_creation."""
        document = Document(page_content=chronicle(sentences=12, seed=100 + stream))
        return _invoke(self._usage_model(), document, stream)

    def invoke_with_cache_read_input(self, *, stream: bool = False) -> AIMessage:
        """The same document a second time: read from the memory cache, reported as cache_read."""
        document = Document(page_content=chronicle(sentences=12, seed=200 + stream))
        llm = self._usage_model()
        _invoke(llm, document, stream=False)
        message = _invoke(llm, document, stream)
        assert message.usage_metadata["input_token_details"]["cache_read"] > 0
        return message
