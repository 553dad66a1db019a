"""Questions whose two facts sit in two windows (llamaindex_qa's two-fact kind): which windows a reading would
read, and what the `reading` weights answer when a two-part question is asked part by part.

    python benchmarks/two_windows/two_windows.py                     # the benchmark's 310 questions
    python benchmarks/two_windows/two_windows.py --seed 1043 --docs 8 --out benchmarks/two_windows/validation

1. Finding, ranking alone (no decoding): for every answerable question, whether the windows each layout reads
   hold its answer (every answer group, `scoring.is_correct` on their text). The windows are ranked as the
   reading ranks them (BM25 fused with MiniLM); the layouts spend `reading`'s budget (one window as text, 64
   slots: one more window) on the best window's better-ranked neighbour (what `read_within` reads), on the
   next-ranked window, or read three.
2. Answering part by part: a question that asks two things ("What is X, and who is Y?", split by
   `rcc_model.question_parts`, as the query engine now splits it itself) is asked as its two parts, each
   through `RCCMemoryIndex` with its own reading (one slot alignment, the model's margin), and the two answers
   are joined; correct when the joined answer holds every answer group, as llamaindex_qa scores the whole
   question.

Writes `--out`.{jsonl,md,json}: each part's answer, and the tables.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch
from llama_index.core import Document

sys.path[:0] = [str(Path(__file__).resolve().parents[1] / "_common"),
                str(Path(__file__).resolve().parents[1] / "llamaindex_qa")]
from _chronicles import MiniLM  # noqa: E402
from _report import machine, write_report  # noqa: E402
from question_set import generated, load  # noqa: E402
from scoring import is_correct  # noqa: E402

from rcc_integrations.llama_index import RCCMemoryIndex  # noqa: E402
from rcc_model import RCCModel, question_parts  # noqa: E402
from rcc_model.ranking import rank_windows  # noqa: E402

ANSWERABLE = ("exact", "paraphrased", "two_fact")
DEFAULT_OUT = Path(__file__).with_name("two_windows")


def layouts(ranked: list[int]) -> dict[str, list[int]]:
    """The windows each layout reads, given the windows best first."""
    best, count = ranked[0], len(ranked)
    neighbours = sorted((j for j in (best - 1, best + 1) if 0 <= j < count), key=ranked.index)
    return {"best + neighbour (read_within)": [best, *neighbours[:1]], "best + next-ranked": ranked[:2],
            "best three": ranked[:3]}


def finding(index: RCCMemoryIndex, rows: list[dict], found: dict[str, dict[str, list]]) -> None:
    """Add to `found` (per layout and kind, [questions whose read windows hold the answer, questions]) the
    answerable `rows` about `index`'s one document, its windows ranked with the index's own ranking inputs."""
    (node_id,) = index.node_ids
    texts = index.window_texts(node_id)
    for row in (r for r in rows if r["kind"] in ANSWERABLE):
        scores, _ = rank_windows(row["question"], texts, index.embedder())
        ranked = sorted(range(len(texts)), key=lambda j: (-scores[j], j))
        for layout, read in layouts(ranked).items():
            cell = found.setdefault(layout, {}).setdefault(row["kind"], [0, 0])
            cell[0] += is_correct("\n\n".join(texts[j] for j in sorted(read)), row)
            cell[1] += 1


def part_by_part(index: RCCMemoryIndex, rows: list[dict]) -> list[dict]:
    """The two-part `rows` about `index`'s document asked as their parts (`parts_of`); a record each."""
    engine = index.as_query_engine(max_tokens=32, read_alignments=1)
    records = []
    for row in (r for r in rows if len(question_parts(r["question"])) > 1):
        parts = question_parts(row["question"])
        answers = [str(engine.query(part)) for part in parts]
        records.append({"id": row["id"], "kind": row["kind"], "source": row["source"], "parts": parts,
                        "answers": answers, "correct": is_correct("; ".join(answers), row),
                        "parts_correct": [is_correct(a, {**row, "answers": [g]})
                                          for a, g in zip(answers, row["answers"])]})
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="reading")
    parser.add_argument("--seed", type=int, help="generated documents of this seed instead (a validation set)")
    parser.add_argument("--docs", type=int, default=8, help="with --seed: how many documents")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "rcc" / "llamaindex_qa")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    docs, rows = load(args.cache) if args.seed is None else generated(args.docs, args.seed)
    model, embed = RCCModel.from_pretrained(args.model), MiniLM()
    found: dict[str, dict[str, list]] = {}
    records, cache = [], tempfile.mkdtemp(prefix="rcc-memory-cache-")
    with args.out.with_suffix(".jsonl").open("w") as log:
        for doc, text in docs.items():  # one index per document: its windows embedded once for every question
            index = RCCMemoryIndex.from_documents([Document(text=text, id_=doc)], model=model, embed_model=embed,
                                                  cache_dir=cache)
            about = [r for r in rows if r["doc"] == doc]
            finding(index, about, found)
            for record in part_by_part(index, about):
                records.append(record)
                print(json.dumps(record), file=log, flush=True)
    asked = [r for r in rows if r["kind"] == "two_fact"]
    command = " ".join(["python benchmarks/two_windows/two_windows.py"]
                       + ([f"--model {args.model}"] if args.model != "reading" else [])
                       + ([f"--seed {args.seed} --docs {args.docs}"] if args.seed is not None else [])
                       + ([f"--out {args.out}"] if args.out != DEFAULT_OUT else []))
    body = ["## Finding: the read windows hold the answer (ranking alone)", "",
            "| layout | " + " | ".join(ANSWERABLE) + " |", "|---|" + "---:|" * len(ANSWERABLE)]
    body += [f"| {layout} | " + " | ".join(f"{cells[k][0]} of {cells[k][1]}" for k in ANSWERABLE if k in cells) + " |"
             for layout, cells in found.items()]
    by_source = {}
    for record in records:
        cell = by_source.setdefault(record["source"], [0, 0, 0, 0])
        cell[0] += record["correct"]
        cell[1] += record["parts_correct"][0]
        cell[2] += record["parts_correct"][1]
        cell[3] += 1
    body += ["", f"## Two-part questions asked part by part (`{args.model}`, one alignment)", "",
             f"{len(records)} of the {len(asked)} two-fact questions ask two things; the others bridge one fact to "
             "another and are not split.", "", "| source | both parts right | first part | second part |",
             "|---|---:|---:|---:|"]
    body += [f"| {source} | {c[0]} of {c[3]} | {c[1]} | {c[2]} |" for source, c in by_source.items()]
    body += [f"| all | {sum(c[0] for c in by_source.values())} of {len(records)} | "
             f"{sum(c[1] for c in by_source.values())} | {sum(c[2] for c in by_source.values())} |"]
    write_report(args.out, "Two windows: finding both facts, and asking two-part questions part by part", command,
                 body, {"finding": found, "part_by_part": by_source},
                 measured_on=machine(torch.get_num_threads()))


if __name__ == "__main__":
    main()
