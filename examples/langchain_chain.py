"""A LangChain chain that answers questions about a long local document through RCC memory.

    python examples/langchain_chain.py            # offline, on the packaged default model

The document (about 10K tokens, several times the encoder window) is compressed once, on the first call,
and read from the memory cache afterwards: watch `cache_read` in the usage.
"""

from langchain_core.documents import Document
from langchain_core.prompts import ChatPromptTemplate
from long_document import FACTS, chronicle_text

from rcc_integrations.langchain import ChatRCC


def main() -> None:
    document = Document(page_content=chronicle_text(), metadata={"source": "chronicle.txt"})
    llm = ChatRCC(max_tokens=48).bind(memory=[document])
    prompt = ChatPromptTemplate.from_messages([
        ("system", "Answer from the document in your memory, in one sentence."),
        ("human", "{question}"),
    ])
    chain = prompt | llm
    for question in FACTS:
        answer = chain.invoke({"question": question})
        usage = answer.usage_metadata
        print(f"Q: {question}\nA: {answer.content.strip()}")
        print(f"   {usage['input_tokens']} input tokens ({answer.response_metadata['memory_slots']} memory slots), "
              f"compressed now: {usage['input_token_details']['cache_creation']}, "
              f"from cache: {usage['input_token_details']['cache_read']}\n")


if __name__ == "__main__":
    main()
