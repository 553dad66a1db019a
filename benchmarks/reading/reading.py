"""Reading part of a memory: which windows a question should read, and how many, on the packaged default.

    python benchmarks/reading/reading.py        # writes reading.{json,md,png}

Generated town chronicles (by default eight of 1,000 sentences, about 16K tokens each: twice the decoder's
8,192 positions), each with three facts (two 5-digit access codes and one keeper's name) spread through it;
one question per fact.
1. Ranking: where each scorer puts the window holding the fact among all windows: BM25 over the windows' text
   (`rcc_model.reading`, what the integrations use) vs the cosine between the encoder's mean last-layer
   states of question and window (what `RCCMemoryIndex` routed whole documents by before).
2. Answers: the decoder reads the windows `read_within` selects for budgets of 1 to 8 windows' slots; with
   no relevance cutoff (the next-best windows, like facts about other places, fill the budget); and the whole
   memory of the question's own document (about 4K slots, what `ChatRCC` read before); and, at the model's
   `read_slots`, the same weights over windows split the other way (`split`: fixed W-token windows, or
   windows that end at sentence ends). A question counts as
   answered when the output contains the expected code or name.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from bisect import bisect_right
from itertools import accumulate
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import torch

from rcc_model import CompressedMemory, RCCModel
from rcc_model.reading import bm25, read_within
from rcc_model.samples import chronicle

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "_common"))
from _report import write_report

PLACES = ["the north tower", "the salt store", "the signal box", "the seed bank", "the clock house",
          "the grain mill", "the ferry house", "the lamp works", "the east gate", "the boat shed", "the weir",
          "the chapel", "the rope walk", "the tide mill", "the fish market", "the old bakery", "the toll bridge",
          "the bell foundry", "the pump house", "the coach inn", "the paper mill", "the quarry office",
          "the dye works", "the south pier"]
NAMES = ["Ines Okafor", "Tomas Varga", "Mira Lindqvist", "Jonas Abebe", "Lena Moreau", "Piotr Sato"]


def corpus(docs: int, sentences: int, seed: int) -> tuple[list[str], list[tuple[int, str, str, str]]]:
    """Chronicles with three facts each, and (document, question, answer, fact sentence) for every fact."""
    rng = random.Random(seed)
    texts, questions = [], []
    for d in range(docs):
        facts = []
        for k, place in enumerate(PLACES[3 * d:3 * d + 3]):
            if k == 1:
                name = rng.choice(NAMES)
                facts.append(f"The keeper of {place} is {name}.")
                questions.append((d, f"Who is the keeper of {place}?", name, facts[-1]))
            else:
                code = str(rng.randint(10000, 99999))
                facts.append(f"The access code of {place} is {code}.")
                questions.append((d, f"What is the access code of {place}?", code, facts[-1]))
        texts.append(chronicle(sentences=sentences, seed=seed * 100 + d, facts=facts))
    return texts, questions


def gist(states: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(states[:, -1].float().mean(0), dim=0)


def fact_windows(model: RCCModel, document: str, fact: str) -> set[int]:
    """The windows a fact sentence lies in (two when a window boundary cuts it)."""
    start = document.index(fact)
    first = len(model.encode_text(document[:start]))
    last = len(model.encode_text(document[:start + len(fact)])) - 1
    ends = list(accumulate(len(w) for w in model._windows_of(model.encode_text(document))))
    return {bisect_right(ends, first), bisect_right(ends, last)}


def ranking(model: RCCModel, documents, memories, texts, questions) -> dict:
    flat = [(i, j) for i, t in enumerate(texts) for j in range(len(t))]
    gists = torch.stack([gist(w.states) for m in memories for w in m.windows()])
    rows = []
    for doc, question, _, fact in questions:
        holding = {flat.index((doc, j)) for j in fact_windows(model, documents[doc], fact)}
        lexical = bm25(question, [texts[i][j] for i, j in flat])
        cosine = (gists @ gist(model.compress(question).states)).tolist()
        rank = {name: min(sorted(range(len(flat)), key=lambda k: -s[k]).index(k) for k in holding)
                for name, s in (("bm25", lexical), ("encoder_cosine", cosine))}
        rows.append({"question": question, "fact_windows": len(holding), **rank})
    return {"windows": len(flat), "rows": rows}


def answers(model: RCCModel, memories, texts, questions, budget: int | None, relevance: float = 0.75) -> dict:
    rows, began = [], time.perf_counter()
    for doc, question, answer, _ in questions:
        read = memories[doc] if budget is None else read_within(question, memories, texts, budget, relevance).memory
        output = model.generate(read, [{"role": "user", "content": question}], max_new_tokens=16)
        rows.append({"question": question, "expected": answer, "output": output, "slots": read.num_slots,
                     "correct": answer.lower() in output.lower()})
    return {"accuracy": sum(r["correct"] for r in rows) / len(rows),
            "seconds_per_question": (time.perf_counter() - began) / len(rows), "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--docs", type=int, default=8, help="documents (at most 8: three places each)")
    parser.add_argument("--sentences", type=int, default=1000, help="sentences per document")
    parser.add_argument("--budgets", type=int, nargs="+", default=[64, 128, 192, 256, 512])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("reading"))
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    model = RCCModel.from_pretrained(args.model)
    documents, questions = corpus(args.docs, args.sentences, args.seed)
    memories: list[CompressedMemory] = model.compress(documents)
    texts = [model.window_texts(d) for d in documents]
    ranks = ranking(model, documents, memories, texts, questions)
    runs = {f"read_within, {b} slots": {"budget": b, **answers(model, memories, texts, questions, b)}
            for b in args.budgets}
    second = args.budgets[1] if len(args.budgets) > 1 else args.budgets[0]
    runs[f"best windows, no relevance cutoff, {second} slots"] = {
        "budget": second, **answers(model, memories, texts, questions, second, relevance=0.0)}
    runs["the question's whole document"] = {"budget": None, **answers(model, memories, texts, questions, None)}
    split, budget = model.config.split, model.config.read_slots or args.budgets[0]
    cut = {split: sum(r["fact_windows"] > 1 for r in ranks["rows"])}
    model.config.split = other = "fixed" if split == "sentence" else "sentence"  # same weights, other windows
    memories, texts = model.compress(documents), [model.window_texts(d) for d in documents]
    cut[other] = sum(len(fact_windows(model, documents[d], f)) > 1 for d, _, _, f in questions)
    runs[f"read_within, {budget} slots, {other} windows"] = {
        "budget": budget, **answers(model, memories, texts, questions, budget)}
    model.config.split = split

    table = [f"Model: `{args.model}` (read_slots {model.config.read_slots}, split {split}). Corpus: {args.docs} "
             f"documents, "
             f"{sum(m.token_count for m in memories):,} tokens, {ranks['windows']} windows, "
             f"{len(questions)} questions.", "",
             f"Facts cut by a window boundary: {cut['fixed']} of {len(questions)} with fixed windows, "
             f"{cut['sentence']} with windows ending at sentence ends (`split`).", "",
             f"Ranking ({split} windows): place of the fact's window among all windows (0 = first; the better "
             "of two where a boundary cuts the fact).", "",
             "| scorer | first | in the top 2 | median place |", "|---|---:|---:|---:|"]
    for name in ("bm25", "encoder_cosine"):
        places = sorted(r[name] for r in ranks["rows"])
        table.append(f"| {name} | {sum(p == 0 for p in places)}/{len(places)} | "
                     f"{sum(p < 2 for p in places)}/{len(places)} | {places[len(places) // 2]} |")
    table += ["", f"Answers from what was read ({split} windows unless named):", "",
              "| read | slots read (mean) | answered | s / question |",
              "|---|---:|---:|---:|"]
    for name, run in runs.items():
        slots = sum(r["slots"] for r in run["rows"]) / len(run["rows"])
        right = sum(r["correct"] for r in run["rows"])
        table.append(f"| {name} | {slots:,.0f} | {right}/{len(run['rows'])} | {run['seconds_per_question']:.1f} |")

    budgets = [run["budget"] for run in runs.values() if run["budget"] is not None][:len(args.budgets)]
    accuracy = [runs[f"read_within, {b} slots"]["accuracy"] for b in budgets]
    matplotlib.use("Agg")
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    ax.plot(budgets, accuracy, marker="o", label="read_within (BM25 + neighbours)")
    ax.axhline(runs["the question's whole document"]["accuracy"], color="grey", linestyle="--",
               label="whole document")
    ax.set(xscale="log", xlabel="memory budget (slots; 64 = one window)", ylabel="answered",
           ylim=(-0.02, 1.02), title="Facts in long documents, packaged default")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out.with_suffix(".png"), dpi=120)
    command = ("python benchmarks/reading/reading.py " + f"--model {args.model} --docs {args.docs} --sentences "
               f"{args.sentences} --budgets {' '.join(map(str, args.budgets))} --seed {args.seed}")
    write_report(args.out, "Reading part of a memory: ranking windows and the read budget", command, table,
                 {"ranking": ranks, "answers": runs})


if __name__ == "__main__":
    main()
