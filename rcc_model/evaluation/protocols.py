"""Evaluation protocols: reconstruction, passkey, needle in real text, question answering.

Each returns a dict of figures (and per-item rows) that `rcc eval` writes as JSON, Markdown and PNG.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from rcc_model.beam_search import Search
from rcc_model.data.qa import QAExample
from rcc_model.evaluation import metrics
from rcc_model.generation import QuestionNotRecalled
from rcc_model.memory import CompressedMemory, MemoryViews
from rcc_model.modeling import RCCModel
from rcc_model.prompts import Prompt, question_of, text_then_question
from rcc_model.reading import reading_for
from rcc_model.reconstruction import reconstruct_windows, reconstruction_prompt
from rcc_model.samples import passkey_fact
from rcc_model.training.batch import collate
from rcc_model.training.objectives import Example

PASSKEY_INTRO = ("There is an important info hidden inside a lot of irrelevant text. Find it and memorize them. "
                 "I will quiz you about the important information there.\n")
PASSKEY_FILLER = ("The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. ")
PASSKEY_QUESTION = "What is the pass key? The pass key is"
NEEDLE_SENTENCE = "The secret code of the archive is {code}."
NEEDLE_QUESTION = "What is the secret code of the archive? Answer with the number."
# the base model writes a code in a sentence: "The secret code of the archive is 60494" is 15 tokens
SENTENCE_ANSWER_TOKENS = 32


def first_integer(text: str) -> str | None:
    found = re.search(r"\d+", text)
    return found.group(0) if found else None


def reconstruction(model: RCCModel, tokens: np.ndarray, windows: int = 32, seed: int = 0,
                   batch_size: int = 8, stop_at_eos: bool = False, rate: int | None = None,
                   no_repeat_ngram_size: int = 0, num_beams: int | None = None, verify: float | None = None,
                   anchored: bool | None = None, progress: bool = False) -> dict:
    """Compress held-out windows of W tokens one by one at `rate` (the model's default, or another of its
    trained rates) and regenerate each to its known length as `RCCModel.reconstruct` does: by the model's own
    search settings, each of `num_beams`, `verify`, `anchored` replacing its own where given
    (`rcc_model.beam_search`), optionally never repeating an n-gram. With `stop_at_eos`, greedily until the
    decoder emits EOS. `progress` shows a bar over the windows on stderr."""
    if stop_at_eos:
        if not Search(num_beams or 1, verify or 0.0, bool(anchored)).greedy:
            raise ValueError("beam search decodes each window to its known length: drop `stop_at_eos`")
        search = Search()
    else:
        search = Search.of(model.config, num_beams, verify, anchored)
    rate = model.config.check_rate(rate)
    rng = random.Random(seed)
    width = model.config.window
    starts = sorted(rng.randrange(0, len(tokens) - width) for _ in range(windows))
    references = [tokens[s:s + width].tolist() for s in starts]
    generated: list[list[int]] = []
    for i in tqdm(range(0, len(references), batch_size), desc="reconstruction", unit="batch", disable=not progress):
        memories = model.compress(references[i:i + batch_size], rate=rate)
        if stop_at_eos:
            generated += [row[:width] for row in model.generate_ids(
                memories, max_new_tokens=width, no_repeat_ngram_size=no_repeat_ngram_size)]
        else:
            generated += reconstruct_windows(
                model, CompressedMemory.concat(memories), batch_size=batch_size,
                no_repeat_ngram_size=no_repeat_ngram_size, num_beams=search.num_beams, verify=search.verify,
                anchored=search.anchored)
    own = teacher_forced_loss(model, references, references, batch_size, rate)
    other = teacher_forced_loss(model, references[1:] + references[:1], references, batch_size, rate)
    decode = model.tokenizer.decode
    hyp_text = [decode(g, skip_special_tokens=True) for g in generated]
    ref_text = [decode(r, skip_special_tokens=True) for r in references]
    return {
        "rate": rate, "window": width, "windows": windows,
        "length": "until EOS" if stop_at_eos else "the window's token count",
        "no_repeat_ngram_size": no_repeat_ngram_size, "num_beams": search.num_beams,
        "verify": search.verify, "anchored": search.anchored,
        "teacher_forced_loss": own, "loss_with_another_windows_memory": other,
        "bleu4": metrics.corpus_bleu4([h.split() for h in hyp_text], [r.split() for r in ref_text]),
        "sacrebleu": metrics.sacrebleu_score(hyp_text, ref_text),
        "exact_match": float(np.mean([h == r for h, r in zip(generated, references)])),
        "token_accuracy": float(np.mean([metrics.token_accuracy(h, r) for h, r in zip(generated, references)])),
        "examples": [{"reference": r, "generated": h} for r, h in zip(ref_text[:3], hyp_text[:3])],
    }


@torch.no_grad()
def teacher_forced_loss(model: RCCModel, contexts: list[list[int]], targets: list[list[int]],
                         batch_size: int, rate: int) -> float:
    """Mean cross-entropy of regenerating `targets` from the memory of `contexts`: with another window's
    memory it measures what the decoder guesses without the right memory, so the gap is what it reads."""
    losses = []
    for i in range(0, len(targets), batch_size):
        examples = [Example(c, [], t) for c, t in zip(contexts[i:i + batch_size], targets[i:i + batch_size])]
        batch = collate(examples, model.config.window, model.config.padding).to(model.device)
        losses.append(model(batch.window_ids, batch.window_lengths, batch.window_owner, batch.input_ids,
                            batch.attention_mask, batch.labels, train_encoder=False, rate=rate).item())
    return float(np.mean(losses))


def read_context(model: RCCModel, context: list[int], prompt, read_slots: int | None,
                 reconstructed: dict | None = None) -> tuple[CompressedMemory | MemoryViews, Prompt, list]:
    """What the decoder reads to answer `prompt` about `context`, the prompt it answers, and the windows read:
    the memory of `context`, whole (`read_slots` None) or the part that the question reads within `read_slots`
    slots, read as the integrations read it (`rcc_model.reading_for`). With `reconstructed`
    (`rcc_model.reconstruction_prompt`'s settings: `reconstruct`'s search, {} for the model's own, and `rank`),
    no memory and the prompt with the memory's reconstructed text instead, windows ranked by their
    reconstructions."""
    memory = model.compress(context, keep_text=read_slots is not None and reconstructed is None)
    if reconstructed is not None:
        prompt, reading = reconstruction_prompt(model, memory, prompt, read_slots, **reconstructed)
        return model.empty_memory(), prompt, reading.windows[0]
    expand = model.config.expand_tokens if read_slots is not None else 0
    read, reading = reading_for(model, memory, question_of(prompt), read_slots,  # as `rcc ask` reads it
                                expand_tokens=expand)
    return read, reading.prompt(prompt), reading.windows[0] + reading.expanded[0]


def _reading(model: RCCModel, read_slots: int | None, reconstructed: dict | None = None) -> dict:
    """How `read_context` read the memories, for a result: the budget, the alignments it read them at, and whether
    it read their reconstruction (with the search that wrote it)."""
    if reconstructed is None:
        return {"read_slots": read_slots, "read_alignments": model.config.read_alignments if read_slots else 1,
                "expand_tokens": model.config.expand_tokens if read_slots else 0, "read_from": "slots"}
    settings = dict(reconstructed)
    rank = settings.pop("rank", None)
    search = Search.of(model.config, **settings)
    return {"read_slots": read_slots, "read_from": "reconstruction", "reconstruct_beams": search.num_beams,
            "reconstruct_verify": search.verify, "reconstruct_anchored": search.anchored,
            "ranked_on": "the reconstructions read" if rank is None else _described(Search.of(model.config, **rank))}


def _described(search: Search) -> str:
    """A search's settings in one line, for a result's table."""
    return f"reconstructions by beams {search.num_beams}, verify {search.verify:g}, anchored {search.anchored}"


def _windows_holding(model: RCCModel, context: list[int], span: tuple[int, int]) -> list[int]:
    """The windows of `context`'s memory that hold a token of `span` (start, end): the code's sentence."""
    bounds = np.cumsum([0] + [len(window) for window in model.window_ids(context)])
    return [i for i in range(len(bounds) - 1) if bounds[i] < span[1] and bounds[i + 1] > span[0]]


def _grid(model: RCCModel, build, lengths: Sequence[int], depths: Sequence[float], trials: int,
          seed: int, read_slots: int | None = None, reconstructed: dict | None = None, base=None,
          progress: bool = False) -> dict:
    """Run `build(rng, length, depth) -> (context ids, prompt, answer, the answer's token span)` over a grid:
    per cell, exact accuracy, the share of the code's digits recalled in place (partial credit shows progress
    before exact recall does), and every answer given, with the windows read and those holding the code.
    With `read_slots`, the decoder reads only that much of each memory (`read_context`): the protocol as the
    integrations run it, retrieval included, and `found` is the share of readings that took a window holding
    the code, which tells a miss in finding it from a miss in reading it. With `reconstructed`, it reads
    the memory's reconstruction (`read_context`), and the answer may be 32 tokens long instead of 12: the base model
    writes the code in a sentence ("The secret code of the archive is 60494" is 15 tokens). With `base`, the
    same base model also answers with the whole context in its window where it fits (`full_text`, None where
    it does not; 32 tokens): the ceiling a compressed reading is measured against, in the same run.
    `progress` shows a bar over the trials on stderr."""
    answer_tokens = SENTENCE_ANSWER_TOKENS if reconstructed is not None else 12
    rng = random.Random(seed)
    cells = []
    bar = tqdm(total=len(lengths) * len(depths) * trials, desc="trials", unit="trial", disable=not progress)
    for length in lengths:
        for depth in depths:
            answers = []
            for _ in range(trials):
                context, asked, answer, span = build(rng, length, depth)
                memory, prompt, read = read_context(model, context, asked, read_slots, reconstructed)
                output = model.generate(memory, prompt, max_new_tokens=answer_tokens, reading=None)
                answers.append({"expected": answer, "output": output, "windows_read": read,
                                "windows_holding": _windows_holding(model, context, span)})
                if base is not None:  # the question as asked: `prompt` may hold the reconstruction read
                    answers[-1]["full_text"] = _full_text_answer(base, model.tokenizer, context, question_of(asked),
                                                                 SENTENCE_ANSWER_TOKENS)
                bar.update()
            found = [first_integer(a["output"]) or "" for a in answers]
            cells.append({"length": length, "depth": depth,
                          "accuracy": float(np.mean([f == a["expected"] for f, a in zip(found, answers)])),
                          "digit_accuracy": float(np.mean([metrics.digits_in_place(f, a["expected"])
                                                           for f, a in zip(found, answers)])),
                          **({"full_text_accuracy": _full_text_accuracy(answers)} if base is not None else {}),
                          "answers": answers})
    bar.close()
    every = [a for c in cells for a in c["answers"]]
    baseline = {} if base is None else {"full_text_accuracy": _full_text_accuracy(every),
                                        "full_text_fitted": sum(a["full_text"] is not None for a in every)}
    return {"cells": cells, "accuracy": float(np.mean([c["accuracy"] for c in cells])),
            "digit_accuracy": float(np.mean([c["digit_accuracy"] for c in cells])),
            "found": float(np.mean([bool(set(a["windows_read"]) & set(a["windows_holding"])) for a in every])),
            "trials": trials, "answer_tokens": answer_tokens, **baseline,
            **_reading(model, read_slots, reconstructed)}


def _full_text_accuracy(answers: Sequence[dict]) -> float | None:
    """The share of the base model's full-text answers (`full_text`) that hold the code first, over those
    whose context fitted its window; None where none did."""
    fitted = [a for a in answers if a["full_text"] is not None]
    return float(np.mean([first_integer(a["full_text"]) == a["expected"] for a in fitted])) if fitted else None


def passkey(model: RCCModel, lengths: Sequence[int], depths: Sequence[float], trials: int = 2,
            seed: int = 0, read_slots: int | None = None, reconstructed: dict | None = None, base=None,
            progress: bool = False) -> dict:
    """Mohtashami & Jaggi's passkey template (repeated filler), compressed; the question in plain text."""
    filler = model.encode_text(PASSKEY_FILLER)
    intro = model.encode_text(PASSKEY_INTRO)

    def build(rng: random.Random, length: int, depth: float):
        key = str(rng.randint(10000, 99999))
        needle = model.encode_text(f" {passkey_fact(key)} ")
        body = (filler * (length // len(filler) + 1))[: max(0, length - len(intro) - len(needle))]
        cut = int(len(body) * depth)
        start = len(intro) + cut
        return intro + body[:cut] + needle + body[cut:], PASSKEY_QUESTION, key, (start, start + len(needle))

    return {"protocol": "passkey",
            **_grid(model, build, lengths, depths, trials, seed, read_slots, reconstructed, base, progress)}


def needle(model: RCCModel, haystack: Sequence[int], lengths: Sequence[int], depths: Sequence[float],
           trials: int = 2, seed: int = 0, read_slots: int | None = None, sentence: str = NEEDLE_SENTENCE,
           question: str = NEEDLE_QUESTION, reconstructed: dict | None = None, base=None,
           progress: bool = False) -> dict:
    """A code hidden in real, non-repeating held-out text; the question through the chat template.

    `sentence` (with `{code}`) and `question` change the phrasing, e.g. to the generated QA set's own
    ("The access code for the ... is"), which tells reading a code from recognising a phrasing."""
    if "{code}" not in sentence:
        raise ValueError(f"the needle sentence must hold {{code}}, got {sentence!r}")

    def build(rng: random.Random, length: int, depth: float):
        return needle_case(model, haystack, rng, length, depth, sentence, question)

    return {"protocol": "needle", "sentence": sentence, "question": question,
            **_grid(model, build, lengths, depths, trials, seed, read_slots, reconstructed, base, progress)}


def needle_case(model: RCCModel, haystack: Sequence[int], rng: random.Random, length: int, depth: float,
                sentence: str = NEEDLE_SENTENCE, question: str = NEEDLE_QUESTION
                ) -> tuple[list[int], list[dict], str, tuple[int, int]]:
    """One needle: `length` tokens of `haystack` from a random start with `sentence` and a random 5-digit code
    at `depth`; (context ids, the question as chat messages, the code, the sentence's token span)."""
    code = str(rng.randint(10000, 99999))
    start = rng.randrange(0, max(1, len(haystack) - length))
    body = [int(t) for t in haystack[start:start + length]]  # numpy memmap rows -> token ids
    hidden = model.encode_text(f" {sentence.format(code=code)} ")
    cut = int(len(body) * depth)
    return (body[:cut] + hidden + body[cut:], [{"role": "user", "content": question}], code,
            (cut, cut + len(hidden)))


@torch.no_grad()
def _full_text_answer(base, tokenizer, context: str | Sequence[int], question: str, max_new_tokens: int
                      ) -> str | None:
    """The same base model with the whole text (or its token ids) in its context window, greedy, in the prompt
    `reconstruction_prompt` writes; None where it does not fit."""
    window = base.config.max_position_embeddings
    if not isinstance(context, str):
        if len(context) + max_new_tokens > window:  # before decoding a text that may run to a million tokens
            return None
        context = tokenizer.decode(context)
    messages = [{"role": "user", "content": text_then_question(context, question)}]
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                        return_dict=True)["input_ids"].to(base.device)
    if ids.shape[1] + max_new_tokens > window:
        return None
    out = base.generate(ids, max_new_tokens=max_new_tokens, do_sample=False)
    return tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


def question_answering(model: RCCModel, examples: Sequence[QAExample], base=None,
                       max_new_tokens: int = 48, read_slots: int | None = None,
                       compressed_question: bool = False, reconstructed: dict | None = None,
                       progress: bool = False) -> dict:
    """Token F1 and ROUGE-L from memory (question in plain text), and, with `base`, the same base model
    reading the full text. With `read_slots`, the decoder reads only that much of each memory, as the
    integrations do (`read_context`). With `compressed_question`, the paper's instruction reconstruction: the
    question is compressed after the context (`context + "\n\n" + question`) and the decoder recalls it
    from memory before answering (`RCCModel.ask(memory, None)`); the whole memory is read. With
    `reconstructed`, the decoder answers from the memory's reconstructed text (`read_context`). `progress` shows a
    bar over the questions on stderr."""
    if compressed_question and (read_slots is not None or reconstructed is not None):
        raise ValueError("a compressed question is read from the whole memory's slots: drop `read_slots` and "
                         "`reconstructed`")
    rows = []
    for example in tqdm(examples, desc="questions", unit="question", disable=not progress):
        if compressed_question:
            context = model.encode_text(f"{example.context}\n\n{example.question}")
            memory, _, read = read_context(model, context, example.question, None)
            try:
                answer = model.ask(memory, None, max_new_tokens=max_new_tokens)
            except QuestionNotRecalled:  # scored as no answer: one row does not end the run
                answer = ""
        else:
            memory, prompt, read = read_context(model, model.encode_text(example.context),
                                                [{"role": "user", "content": example.question}], read_slots,
                                                reconstructed)
            answer = model.generate(memory, prompt, max_new_tokens=max_new_tokens, reading=None)
        row = {"question": example.question, "reference": example.answer, "rcc": answer,
               "rcc_f1": metrics.token_f1(answer, example.answer),
               "rcc_rouge_l": metrics.rouge_l(answer, example.answer), "windows_read": read}
        if base is not None:
            full = _full_text_answer(base, model.tokenizer, example.context, example.question, max_new_tokens) or ""
            row.update(full_text=full, full_f1=metrics.token_f1(full, example.answer),
                       full_rouge_l=metrics.rouge_l(full, example.answer))
        rows.append(row)
    summary = {key: float(np.mean([r[key] for r in rows])) for key in rows[0] if key.endswith(("_f1", "_rouge_l"))}
    return {"protocol": "qa", "examples": len(rows), "question_mode": "compressed" if compressed_question else "plain",
            **summary, **_reading(model, read_slots, reconstructed), "rows": rows}
