"""A LangChain agent with a tool, reading a long document through RCC memory.

    python examples/langchain_agent.py            # offline, on the packaged default model

The agent's model carries the document as compressed memory (bound once). The question needs a fact that only
the document holds (the archive's access code) and a sum that only the `calculator` tool does: the model
recalls the code from memory, calls the tool with it (arguments written by schema-constrained decoding), and
answers from the tool's result.
"""

from langchain.agents import create_agent
from langchain_core.documents import Document
from langchain_core.messages import HumanMessage
from long_document import chronicle_text

from rcc_integrations.langchain import ChatRCC

QUESTION = "What is the access code of the archive plus 7?"


def calculator(a: int, b: int) -> int:
    """Add two whole numbers."""
    return a + b


def main() -> None:
    llm = ChatRCC(max_tokens=48, memory=[Document(page_content=chronicle_text())])  # a field: agents keep it
    agent = create_agent(llm, tools=[calculator],
                         system_prompt="You answer questions about the chronicle in your memory.")
    result = agent.invoke({"messages": [HumanMessage(QUESTION)]})
    for message in result["messages"]:
        calls = getattr(message, "tool_calls", None)
        print(f"{type(message).__name__}: {message.content!s:.200}" + (f"  tool calls: {calls}" if calls else ""))
    print(f"answer: {result['messages'][-1].content.strip()}")


if __name__ == "__main__":
    main()
