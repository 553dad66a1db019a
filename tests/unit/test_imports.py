"""The public API, pinned: what `rcc_model` and the integrations export, and that the integrations and the
examples use nothing else of `rcc_model`."""

import ast
from pathlib import Path

import pytest

import rcc_model

ROOT = Path(__file__).resolve().parents[2]

RCC_MODEL_ALL = [
    "ANCHORED_GREEDY", "CompressedMemory", "Cursor", "DecodeState", "GREEDY", "GenerationInfo", "MemoryCache",
    "MemoryFileError", "MemoryMismatchError", "MemoryStore", "MemoryViews", "MemoryWithText", "PART_SEPARATOR",
    "RCCConfig", "RCCModel", "Reading", "ReadingPolicy", "SamplingParams", "SchemaDecoder", "Search",
    "UnsupportedSchemaError", "WindowChoice", "aligned_views", "answer_in_parts", "atomic_folder",
    "chronicle", "confined", "describe", "generate_json", "generate_tool_call", "load_tokenizer_only",
    "passkey_document", "prefers_tool_call", "question_parts", "rate_folders", "read_within", "reading_for",
    "reconstruct_windows", "reconstruction_prompt", "recover", "resolve_checkpoint", "text_only", "with_context",
    "with_question", "__version__",
]


def test_rcc_model_all():
    assert rcc_model.__all__ == RCC_MODEL_ALL
    for name in rcc_model.__all__:
        assert getattr(rcc_model, name) is not None


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        rcc_model.nothing  # noqa: B018


def test_langchain_all():
    from rcc_integrations import langchain

    assert langchain.__all__ == ["ChatRCC", "RCCChatModel", "StreamStopped"]


def test_llama_index_all():
    from rcc_integrations import llama_index

    assert llama_index.__all__ == ["RCCLLM", "RCCMemoryIndex", "StreamStopped"]


def _rcc_model_imports(path: Path) -> list[tuple[str, str]]:
    """Every `rcc_model` import of a file, anywhere in it: (module, name), name "" for `import module`."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, "") for alias in node.names if alias.name.split(".")[0] == "rcc_model"]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "rcc_model":
            found += [(node.module, alias.name) for alias in node.names]
    return found


@pytest.mark.parametrize("folder", ["rcc_integrations", "examples"])
def test_integrations_and_examples_use_only_the_public_api(folder):
    outside = sorted(f"{path.relative_to(ROOT)}: {module} {name}" for path in (ROOT / folder).rglob("*.py")
                     for module, name in _rcc_model_imports(path)
                     if module != "rcc_model" or (name and name not in rcc_model.__all__))
    assert not outside, outside
