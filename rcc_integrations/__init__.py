"""LangChain and LlamaIndex integrations of RCC (import the subpackage you use:
`rcc_integrations.langchain`)."""
