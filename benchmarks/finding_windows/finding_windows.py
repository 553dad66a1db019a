"""Which window of a long memory holds the answer, found from the memory alone: why `read_within` ranks by text.

    python benchmarks/finding_windows/finding_windows.py    # writes finding_windows.{json,md}

The needle protocol's cases (`rcc eval needle`: a 5-digit code in held-out manual text, the protocol's own
sentence and question), drawn with another seed than the evaluation's (`--seed 1`; it uses 0), at 4K to 16K
tokens and five depths. Three scorers rank the memory's windows for the question:
- bm25: Okapi BM25 over each window's text (`rcc_model.reading`, what the integrations use; it needs the text);
- attention: the decoder reads the whole memory, then the prompt; each window scores the attention its slots
  get from the question's tokens, averaged over heads and layers (and, as an upper bound chosen on these very
  cases, the single best layer);
- answers: the decoder reads each window alone; a window scores how much likelier its best answer that is not
  the model's abstention is than the abstention ("The document does not say."), and the best window's answer
  is the reading's answer.
A memory stored without its text can use only the last two. What is measured is where the needle's window
ranks among all windows (0 = first; the better of two where a boundary cuts the sentence), and for the answers
scorer, whether the answer it picks holds the code.
"""

from __future__ import annotations

import argparse
import itertools
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

from rcc_model import CompressedMemory, RCCModel
from rcc_model.data.build import load_tokens
from rcc_model.decoding import advance, eos_token_ids, prefill
from rcc_model.evaluation.protocols import NEEDLE_QUESTION, NEEDLE_SENTENCE
from rcc_model.prompts import prompt_ids
from rcc_model.reading import bm25

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "_common"))
from _report import write_report


def place(scores, targets) -> int:
    order = list(np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable"))
    return min(order.index(t) for t in targets)


def attention_per_window(model: RCCModel, memory: CompressedMemory, prompt: list[int], question: slice) -> np.ndarray:
    """(layers, windows): attention from the question's prompt tokens to each window's slots, summed over the
    window and the question's tokens, averaged over heads."""
    state = prefill(model, [memory], [prompt[:1]])  # the memory's KV; the prompt's first token keeps it non-empty
    implementation = model.decoder.config._attn_implementation
    model.decoder.set_attn_implementation("eager")  # the only one that returns attention weights
    try:
        ids = torch.tensor([prompt[1:]], device=model.device)
        out = model.decoder(input_ids=ids, attention_mask=torch.cat([state.mask, torch.ones_like(ids)], 1),
                            position_ids=state.positions[:, None] + torch.arange(ids.shape[1], device=ids.device),
                            cache=state.cache, use_cache=True, output_attentions=True, logits_to_keep=1)
    finally:
        model.decoder.set_attn_implementation(implementation)
    to_slots = torch.stack([a[0, :, question, :memory.num_slots].float().sum(1).mean(0)
                            for a in out.attentions])  # (layers, slots)
    bounds = np.cumsum([0] + [w.num_slots for w in memory.windows()])
    return np.stack([to_slots[:, a:b].sum(-1).cpu().numpy() for a, b in itertools.pairwise(bounds)], axis=1)


def answer_margins(model: RCCModel, memory: CompressedMemory, prompt: list[int], batch: int = 16,
                   max_new_tokens: int = 12) -> tuple[list[float], list[str]]:
    """Per window read alone: log P(best answer not starting as the abstention does) - log P(abstention), both
    greedy and scored whole with their end of turn; and that answer."""
    abstention = model.encode_text(model.config.abstention)
    eos = eos_token_ids(model)
    end = model.tokenizer.eos_token_id
    margins, answers = [], []
    windows = memory.windows()
    for start in range(0, len(windows), batch):
        chunk = windows[start:start + batch]
        first = prefill(model, chunk, [prompt] * len(chunk), max_new_tokens + len(abstention))
        rows = torch.arange(len(chunk))
        state, abstain = first.clone(), torch.zeros(len(chunk))  # decoding grows a cache in place
        for token in [*abstention, end]:
            abstain += torch.log_softmax(state.logits, -1)[:, token].cpu()
            if token != end:
                state = advance(model, state, torch.full((len(chunk),), token, device=model.device))
        logits = first.logits.index_fill(1, torch.tensor([abstention[0]], device=first.logits.device), float("-inf"))
        state, score, done = first, torch.zeros(len(chunk)), torch.zeros(len(chunk), dtype=torch.bool)
        written: list[list[int]] = [[] for _ in chunk]
        for _ in range(max_new_tokens):
            tokens = logits.argmax(-1)
            score += torch.where(done, 0.0, torch.log_softmax(logits, -1)[rows, tokens].cpu())
            for row, token in enumerate(tokens.tolist()):
                if not done[row]:
                    done[row] = token in eos
                    if not done[row]:
                        written[row].append(token)
            if done.all():
                break
            state = advance(model, state, tokens)
            logits = state.logits
        margins += (score - abstain).tolist()
        answers += [model.tokenizer.decode(w, skip_special_tokens=True) for w in written]
    return margins, answers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--rate", type=int, default=None)
    parser.add_argument("--data", type=Path, default=Path("data"))
    parser.add_argument("--lengths", type=int, nargs="+", default=[4000, 8000, 16000])
    parser.add_argument("--depths", type=float, nargs="+", default=[0.1, 0.3, 0.5, 0.7, 0.9])
    parser.add_argument("--trials", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("finding_windows"))
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    model = RCCModel.from_pretrained(args.model, rate=args.rate)
    haystack = load_tokens(args.data, "heldout")
    prompt = prompt_ids(model.tokenizer, [{"role": "user", "content": NEEDLE_QUESTION}])
    asked = model.tokenizer.encode(NEEDLE_QUESTION, add_special_tokens=False)
    at = next(i for i in range(len(prompt)) if prompt[i:i + len(asked)] == asked)
    question = slice(at - 1, at - 1 + len(asked))  # in prompt[1:], which the attention pass feeds
    rng = random.Random(args.seed)
    rows = []
    for length in args.lengths:
        for depth in args.depths:
            for _ in range(args.trials):  # drawn as protocols.needle draws
                code = str(rng.randint(10000, 99999))
                start = rng.randrange(0, max(1, len(haystack) - length))
                body = [int(t) for t in haystack[start:start + length]]
                hidden = model.encode_text(f" {NEEDLE_SENTENCE.format(code=code)} ")
                cut = int(len(body) * depth)
                context = body[:cut] + hidden + body[cut:]
                ends = np.cumsum([len(w) for w in model._windows_of(context)])
                needle = sorted({int(np.searchsorted(ends, cut, side="right")),
                                 int(np.searchsorted(ends, cut + len(hidden) - 1, side="right"))})
                began = time.perf_counter()
                memory = model.compress(context)
                attention = attention_per_window(model, memory, prompt, question)
                margins, answers = answer_margins(model, memory, prompt)
                best = int(np.argmax(margins))
                rows.append({"length": length, "depth": depth, "code": code, "needle_windows": needle,
                             "windows": memory.num_windows,
                             "bm25": place(bm25(NEEDLE_QUESTION, model.window_texts(context)), needle),
                             "attention": place(attention.mean(0), needle),
                             "attention_by_layer": [place(layer, needle) for layer in attention],
                             "answers": place(margins, needle), "answer": answers[best],
                             "needle_window_answers": [answers[w] for w in needle],
                             "correct": code in answers[best], "seconds": time.perf_counter() - began})
                print(rows[-1]["length"], depth, code, {k: rows[-1][k] for k in ("bm25", "attention", "answers")},
                      repr(answers[best]), flush=True)

    layers = len(rows[0]["attention_by_layer"])
    best_layer = max(range(layers), key=lambda i: (sum(r["attention_by_layer"][i] == 0 for r in rows),
                                                   -np.median([r["attention_by_layer"][i] for r in rows])))
    for r in rows:
        r["attention_best_layer"] = r["attention_by_layer"][best_layer]
    scorers = [("bm25 over the windows' text (needs the text)", "bm25"),
               ("decoder attention, mean over layers and heads", "attention"),
               (f"decoder attention, layer {best_layer} alone (the best of {layers} on these cases)",
                "attention_best_layer"),
               ("each window's best answer vs its abstention", "answers")]
    table = [f"Model: `{args.model}` at r = {model.config.rate}. {len(rows)} needles (seed {args.seed}), "
             f"{min(r['windows'] for r in rows)}-{max(r['windows'] for r in rows)} windows per memory.", "",
             "| scorer | needle's window first | in the top 3 | median place | mean windows |",
             "|---|---:|---:|---:|---:|"]
    mean_windows = np.mean([r["windows"] for r in rows])
    for name, key in scorers:
        places = [r[key] for r in rows]
        table.append(f"| {name} | {sum(p == 0 for p in places)}/{len(rows)} | {sum(p < 3 for p in places)}/"
                     f"{len(rows)} | {np.median(places):.1f} | {mean_windows:.0f} |")
    table += ["", f"Answers read from the best window by the answers scorer: {sum(r['correct'] for r in rows)}/"
              f"{len(rows)} hold the code; read from the needle's own window, "
              f"{sum(any(r['code'] in a for a in r['needle_window_answers']) for r in rows)}/{len(rows)}.", "",
              "| length | depth | code | places: bm25 / attention / answers | answer picked |",
              "|---|---:|---|---|---|"]
    table += [f"| {r['length']} | {r['depth']:.0%} | {r['code']} | {r['bm25']} / {r['attention']} / {r['answers']} "
              f"| {r['answer'][:40]!r} |" for r in rows]
    command = (f"python benchmarks/finding_windows/finding_windows.py --model {args.model}"
               + (f" --rate {args.rate}" if args.rate else "") + f" --data {args.data} --lengths "
               f"{' '.join(map(str, args.lengths))} --depths {' '.join(map(str, args.depths))} --trials {args.trials} "
               f"--seed {args.seed}")
    write_report(args.out, "Finding the window that holds a needle, from the memory alone", command, table,
                 {"best_layer": best_layer, "rows": rows})


if __name__ == "__main__":
    main()
