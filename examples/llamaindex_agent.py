"""A LlamaIndex ReActAgent that answers questions over a folder of long text files through RCCMemoryIndex.

    python examples/llamaindex_agent.py                           # two generated long files, offline
    python examples/llamaindex_agent.py FOLDER --question "..."   # your own .txt files

Each file is compressed whole into RCC memory once (no chunking, no embeddings) and the index is persisted
next to the files, so a second run loads it instead of compressing again. The agent's one tool is the
index's query engine, which hands the decoder that memory: the agent asks it the user's question, then
answers from what it said.
"""

import argparse
import asyncio
import tempfile
from pathlib import Path

from llama_index.core import SimpleDirectoryReader
from llama_index.core.agent.workflow import ReActAgent, ToolCallResult
from llama_index.core.tools import QueryEngineTool
from long_document import chronicle_text

from rcc_integrations.llama_index import RCCLLM, RCCMemoryIndex
from rcc_model import chronicle

QUESTION = "Who keeps the lighthouse?"


def write_samples(folder: Path) -> None:
    """The examples' long chronicle (the lighthouse's keeper, the archive's code) and a shorter one (the ferry)."""
    (folder / "chronicle.txt").write_text(chronicle_text())
    (folder / "ferry.txt").write_text(chronicle(sentences=150, seed=1,
                                                facts=["The ferry to Marrow Island leaves at seven in the morning."]))


def load_index(folder: Path) -> RCCMemoryIndex:
    stored = folder / ".rcc_index"
    if stored.is_dir():
        return RCCMemoryIndex.load_from_disk(stored)
    documents = SimpleDirectoryReader(str(folder), required_exts=[".txt"], filename_as_id=True).load_data()
    index = RCCMemoryIndex.from_documents(documents, show_progress=True)
    index.persist(stored)
    return index


async def ask(agent: ReActAgent, question: str) -> None:
    handler = agent.run(user_msg=question)
    async for event in handler.stream_events():
        if isinstance(event, ToolCallResult):
            print(f"tool call: {event.tool_name}({event.tool_kwargs}) -> {str(event.tool_output)[:160]!r}")
    print(f"answer: {await handler}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", type=Path, help="folder of .txt files (default: generated samples)")
    parser.add_argument("--question", default=QUESTION)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.folder or Path(scratch)
        if args.folder is None:
            write_samples(folder)
        index = load_index(folder)
        library = QueryEngineTool.from_defaults(index.as_query_engine(max_tokens=48), name="library",
                                                description="Answers a question from the text files in memory.")
        agent = ReActAgent(tools=[library], llm=RCCLLM(max_tokens=64))  # looks it up, then answers from it
        asyncio.run(ask(agent, args.question))


if __name__ == "__main__":
    main()
