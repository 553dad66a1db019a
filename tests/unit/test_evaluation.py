"""Evaluation protocols and `rcc eval` outputs, on a tiny model with SmolLM2's tokenizer."""

import json

import numpy as np
import pytest

from rcc_model import GREEDY, reconstruction_prompt
from rcc_model.cli.evaluate import write
from rcc_model.data.qa import QAExample
from rcc_model.evaluation import protocols
from rcc_model.generation import QuestionNotRecalled


def test_reconstruction_reports_every_measure(text_rcc, smollm2_tokenizer):
    tokens = np.asarray(smollm2_tokenizer("The keeper wrote the date in the log. " * 60)["input_ids"])
    result = protocols.reconstruction(text_rcc, tokens, windows=3, batch_size=2)
    assert result["windows"] == 3 and result["rate"] == 4
    for key in ("bleu4", "sacrebleu", "exact_match", "token_accuracy"):
        assert 0 <= result[key] <= 100
    assert len(result["examples"]) == 3
    assert result["teacher_forced_loss"] > 0 and result["loss_with_another_windows_memory"] > 0


def test_reconstruction_reads_a_multi_rate_model_at_each_of_its_rates(text_rcc, smollm2_tokenizer):
    text_rcc.config.rates = [4, 8]
    tokens = np.asarray(smollm2_tokenizer("The keeper wrote the date in the log. " * 60)["input_ids"])
    at4, at8 = (protocols.reconstruction(text_rcc, tokens, windows=2, batch_size=2, rate=r) for r in (4, 8))
    assert (at4["rate"], at8["rate"]) == (4, 8)
    assert at4["teacher_forced_loss"] != at8["teacher_forced_loss"]  # half the slots: a different memory

def test_passkey_and_needle_fill_their_grids(text_rcc, smollm2_tokenizer):
    result = protocols.passkey(text_rcc, lengths=[100, 200], depths=[0.2, 0.8], trials=1)
    assert [(c["length"], c["depth"]) for c in result["cells"]] == [(100, .2), (100, .8), (200, .2), (200, .8)]
    haystack = np.asarray(smollm2_tokenizer("Real text does not repeat itself like filler does. " * 40)["input_ids"],
                          dtype=np.uint32)  # as `rcc data build` stores tokens
    needle = protocols.needle(text_rcc, haystack, [150], [0.5], trials=2)
    answers = needle["cells"][0]["answers"]
    assert len(answers) == 2 and all(len(a["expected"]) == 5 and isinstance(a["output"], str) for a in answers)
    assert needle["accuracy"] == np.mean([(protocols.first_integer(a["output"]) == a["expected"]) for a in answers])
    assert 0 <= needle["digit_accuracy"] <= 1


def test_needle_can_read_only_the_window_that_matches_the_question(text_rcc, smollm2_tokenizer):
    filler = text_rcc.encode_text(" Real text does not repeat itself like filler does." * 12)[:96]  # 3 windows
    context = filler + text_rcc.encode_text(" The secret code of the archive is 48213. ") + filler
    question = [{"role": "user", "content": "What is the secret code of the archive?"}]
    memory, _, (window,) = protocols.read_context(text_rcc, context, question, read_slots=8)  # one 32-token window
    assert memory.num_slots == 8
    assert "48213" in smollm2_tokenizer.decode(text_rcc._windows_of(context)[window])
    holding = protocols._windows_holding(text_rcc, context, (len(filler), len(context) - len(filler)))
    assert window in holding and 0 not in holding and len(holding) <= 2  # the sentence, cut by a window edge or not

    haystack = np.asarray(filler * 3, dtype=np.uint32)
    needle = protocols.needle(text_rcc, haystack, [300], [0.1, 0.9], trials=1, read_slots=8)
    assert needle["read_slots"] == 8
    assert all(len(a["windows_read"]) == 1 for c in needle["cells"] for a in c["answers"])
    assert needle["found"] == 1.0  # BM25 over the kept text finds the code's window
    whole = protocols.needle(text_rcc, haystack, [300], [0.5], trials=1)
    assert len(whole["cells"][0]["answers"][0]["windows_read"]) > 8


def test_needle_phrasing_can_be_changed(text_rcc, smollm2_tokenizer):
    haystack = np.asarray(smollm2_tokenizer("Real text does not repeat itself. " * 40)["input_ids"], dtype=np.uint32)
    result = protocols.needle(text_rcc, haystack, [150], [0.5], trials=1, read_slots=8,
                              sentence="The access code for the depot is {code}.",
                              question="What is the access code for the depot?")
    assert result["sentence"].startswith("The access code") and result["question"].endswith("depot?")
    with pytest.raises(ValueError, match="code"):
        protocols.needle(text_rcc, haystack, [150], [0.5], sentence="No code here.")


def test_needle_compares_memory_with_the_full_text_where_it_fits(text_rcc, smollm2_tokenizer):
    haystack = np.asarray(smollm2_tokenizer("Real text does not repeat itself. " * 200)["input_ids"], dtype=np.uint32)
    result = protocols.needle(text_rcc, haystack, [150, 1100], [0.5], trials=2, base=text_rcc.decoder)
    short, long = result["cells"]  # the tiny base reads 1,024 positions: 1,100 tokens do not fit
    assert all(isinstance(a["full_text"], str) for a in short["answers"])
    assert all(a["full_text"] is None for a in long["answers"]) and long["full_text_accuracy"] is None
    assert short["full_text_accuracy"] == np.mean([protocols.first_integer(a["full_text"]) == a["expected"]
                                                   for a in short["answers"]])
    assert (result["full_text_accuracy"], result["full_text_fitted"]) == (short["full_text_accuracy"], 2)
    assert "full_text_accuracy" not in protocols.needle(text_rcc, haystack, [150], [0.5], trials=1)


def test_the_full_text_baseline_reads_the_question_asked_not_the_reconstruction(text_rcc, smollm2_tokenizer,
                                                                                 monkeypatch):
    haystack = np.asarray(smollm2_tokenizer("Real text does not repeat itself. " * 40)["input_ids"], dtype=np.uint32)
    asked = []
    monkeypatch.setattr(protocols, "_full_text_answer", lambda base, tokenizer, context, question, tokens:
                        asked.append(question) or "The secret code of the archive is 12345.")
    protocols.needle(text_rcc, haystack, [200], [0.5], trials=1, read_slots=8, reconstructed={"num_beams": 1},
                     base=text_rcc.decoder)
    assert asked == [protocols.NEEDLE_QUESTION]


def test_qa_compares_memory_with_the_full_text_baseline(text_rcc):
    examples = [QAExample("The door is painted teal. " * 10, "What colour is the door?", "teal", "fact")]
    result = protocols.question_answering(text_rcc, examples, base=text_rcc.decoder, max_new_tokens=4)
    assert {"rcc_f1", "rcc_rouge_l", "full_f1", "full_rouge_l"} <= result.keys()
    assert result["rows"][0]["reference"] == "teal"


def test_qa_can_compress_the_question_with_the_context(text_rcc):
    example = QAExample("The door is painted teal. " * 10, "What colour is the door?", "teal", "fact")
    result = protocols.question_answering(text_rcc, [example], max_new_tokens=4, compressed_question=True)
    memory = text_rcc.compress(example.context + "\n\n" + example.question)
    assert result["question_mode"] == "compressed"
    with pytest.raises(QuestionNotRecalled):  # a random model recalls no question: the row scores no answer
        text_rcc.ask(memory, None, max_new_tokens=4)
    assert result["rows"][0]["rcc"] == "" and result["rcc_f1"] == 0
    assert result["rows"][0]["windows_read"] == list(range(memory.num_windows))
    with pytest.raises(ValueError, match="whole memory"):
        protocols.question_answering(text_rcc, [example], read_slots=8, compressed_question=True)


def test_qa_can_read_only_the_window_that_matches_the_question(text_rcc):
    filler = "Real text does not repeat itself like filler does. " * 6
    examples = [QAExample(filler[:60] + "The door of the depot is painted teal. " + filler * 2,
                          "What colour is the door of the depot?", "teal", "fact")]
    whole = protocols.question_answering(text_rcc, examples, max_new_tokens=4)
    read = protocols.question_answering(text_rcc, examples, max_new_tokens=4, read_slots=8)  # one 32-token window
    windows = text_rcc.window_texts(examples[0].context)
    assert whole["rows"][0]["windows_read"] == list(range(len(windows))) and len(windows) > 3
    (window,) = read["rows"][0]["windows_read"]
    assert "door of the depot is painted teal" in windows[window]
    assert (read["read_slots"], whole["read_slots"]) == (8, None)


def test_qa_and_needle_can_answer_from_the_memorys_reconstruction(text_rcc, smollm2_tokenizer):
    example = QAExample("The door is painted teal. " * 10, "What colour is the door?", "teal", "fact")
    result = protocols.question_answering(text_rcc, [example], max_new_tokens=4, reconstructed={})
    chat, _ = reconstruction_prompt(text_rcc, text_rcc.compress(example.context),
                                             [{"role": "user", "content": example.question}])
    assert (result["read_from"], result["reconstruct_beams"]) == ("reconstruction", 1)  # the model's own search
    assert result["rows"][0]["rcc"] == text_rcc.generate(text_rcc.empty_memory(), chat, max_new_tokens=4)
    with pytest.raises(ValueError, match="whole memory"):
        protocols.question_answering(text_rcc, [example], compressed_question=True, reconstructed={})

    haystack = np.asarray(smollm2_tokenizer("Real text does not repeat itself. " * 40)["input_ids"], dtype=np.uint32)
    needle = protocols.needle(text_rcc, haystack, [200], [0.5], trials=1, read_slots=8,
                              reconstructed={"num_beams": 1})
    assert needle["read_from"] == "reconstruction" and "read_alignments" not in needle
    assert needle["answer_tokens"] == 32  # the base model writes the code in a sentence
    assert len(needle["cells"][0]["answers"][0]["windows_read"]) == 1  # the best-matching reconstructed window
    assert needle["ranked_on"] == "the reconstructions read"
    ranked = protocols.needle(text_rcc, haystack, [200], [0.5], trials=1, read_slots=8,
                              reconstructed={"num_beams": 1, "rank": GREEDY})
    assert ranked["ranked_on"] == "reconstructions by beams 1, verify 0, anchored False"
    from_slots = protocols.needle(text_rcc, haystack, [200], [0.5], trials=1)
    assert (from_slots["read_from"], from_slots["answer_tokens"]) == ("slots", 12)


def test_eval_writes_json_markdown_and_a_grid_plot(tmp_path):
    result = {"protocol": "needle", "accuracy": 0.5, "cells": [
        {"length": 1000, "depth": 0.1, "accuracy": 1.0}, {"length": 1000, "depth": 0.9, "accuracy": 0.0}]}
    write(tmp_path, "needle", result)
    assert json.loads((tmp_path / "needle.json").read_text())["accuracy"] == 0.5
    markdown = (tmp_path / "needle.md").read_text()
    assert "| 1000 | 100% | 0% |" in markdown
    assert (tmp_path / "needle.png").read_bytes()[:4] == b"\x89PNG"
    result["cells"][0]["full_text_accuracy"], result["cells"][1]["full_text_accuracy"] = 0.5, None
    write(tmp_path, "needle", {**result, "full_text_accuracy": 0.5})
    assert "| 1000 | 50% | – |" in (tmp_path / "needle.md").read_text()  # the base with the full text, where it fits


def test_first_integer_is_what_passkey_scoring_reads():
    assert protocols.first_integer(" 12345. Remember") == "12345"
    assert protocols.first_integer("no digits") is None


def test_reconstruction_can_read_pwc_inputs(text_rcc, tmp_path):
    import argparse

    from rcc_model.cli.evaluate import _reconstruction_tokens

    rows = [{"input": "First paper abstract.", "prompt": "q", "answer": "a"},
            {"input": "Second one.", "prompt": "q", "answer": "a"}]
    pwc = tmp_path / "pwc.jsonl"
    pwc.write_text("\n".join(json.dumps(r) for r in rows))
    tokens = _reconstruction_tokens(argparse.Namespace(pwc=pwc, data=None), text_rcc)
    expected = text_rcc.encode_text("First paper abstract.\n\n") + text_rcc.encode_text("Second one.\n\n")
    assert tokens.tolist() == expected


def test_eval_tables_and_plots_bleu_by_rate(text_rcc, smollm2_tokenizer, tmp_path):
    tokens = np.asarray(smollm2_tokenizer("The keeper wrote the date in the log. " * 60)["input_ids"])
    row = protocols.reconstruction(text_rcc, tokens, windows=2, batch_size=2)
    write(tmp_path, "reconstruction", {"trained_rates": [4], "by_rate": [row, {**row, "rate": 8}]})
    markdown = (tmp_path / "reconstruction.md").read_text()
    assert "| 4 | " in markdown and "| 8 | " in markdown
    assert (tmp_path / "reconstruction.png").read_bytes()[:4] == b"\x89PNG"
