"""A LangChain agent with a tool, reading a long document through RCC memory.

    python examples/langchain_agent.py            # offline, on the packaged default model

The agent's model carries the document as compressed memory (bound once); it calls the `calculator` tool
with arguments written by schema-constrained decoding, reads the result, and answers.
"""

from langchain.agents import create_agent
from langchain_core.documents import Document
from langchain_core.messages import HumanMessage
from long_document import chronicle_text

from rcc_integrations.langchain import ChatRCC


def calculator(a: int, b: int) -> int:
    """Add two whole numbers."""
    return a + b


def main() -> None:
    llm = ChatRCC(max_tokens=48, tool_call_margin=float("inf")).bind(memory=[Document(page_content=chronicle_text())])
    agent = create_agent(llm, tools=[calculator],
                         system_prompt="You answer questions about the chronicle in your memory.")
    result = agent.invoke({"messages": [HumanMessage("Add the number of the archive code to 7.")]})
    for message in result["messages"]:
        calls = getattr(message, "tool_calls", None)
        print(f"{type(message).__name__}: {message.content!s:.200}" + (f"  tool calls: {calls}" if calls else ""))


if __name__ == "__main__":
    main()
