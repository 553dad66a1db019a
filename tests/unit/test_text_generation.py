"""Text paths (tokenizer, chat template, stop strings, streaming) on a tiny model with SmolLM2's tokenizer."""

import pytest
import torch

from rcc_model.generation import TextStream
from rcc_model.prompts import instruction_frame, prompt_ids

DOC = "The lighthouse keeper wrote the date in the log every evening. " * 6


def test_stream_pieces_join_to_the_generated_text(text_rcc):
    memory = text_rcc.compress(DOC)
    pieces = list(text_rcc.stream(memory, "Hello", max_new_tokens=12))
    assert len(pieces) > 1
    assert "".join(pieces) == text_rcc.generate(memory, "Hello", max_new_tokens=12)


def test_generate_stops_before_a_stop_string(text_rcc):
    memory = text_rcc.compress(DOC)
    full = text_rcc.generate(memory, "Hello", max_new_tokens=16)
    stop = full[len(full) // 2: len(full) // 2 + 2]
    assert stop and stop in full
    cut = text_rcc.generate(memory, "Hello", max_new_tokens=16, stop=[stop])
    assert cut == full[: full.index(stop)]
    assert "".join(text_rcc.stream(memory, "Hello", max_new_tokens=16, stop=[stop])) == cut


def test_batched_text_generation_equals_one_by_one(text_rcc):
    memories = text_rcc.compress([DOC, "A short note."])
    prompts = ["Hello", [{"role": "user", "content": "Who wrote?"}]]
    batched = text_rcc.generate(memories, prompts, max_new_tokens=8)
    assert batched == [text_rcc.generate(m, p, max_new_tokens=8) for m, p in zip(memories, prompts)]


def test_chat_messages_go_through_the_base_models_template(smollm2_tokenizer):
    ids = prompt_ids(smollm2_tokenizer, [{"role": "user", "content": "Hi"}])
    text = smollm2_tokenizer.decode(ids)
    assert text.startswith("<|im_start|>system") and text.endswith("<|im_start|>assistant\n")


def test_instruction_frame_splits_the_template_around_the_question(smollm2_tokenizer):
    frame = instruction_frame(smollm2_tokenizer)
    assert frame.header.endswith("<|im_start|>user\n")
    assert frame.turn_end == "<|im_end|>\n<|im_start|>assistant\n"


def test_text_stream_holds_back_a_possible_stop_string_prefix(smollm2_tokenizer):
    stream = TextStream(smollm2_tokenizer, stop=["STOP"])
    shown = "".join(stream.push(t) for t in smollm2_tokenizer("abc ST", add_special_tokens=False)["input_ids"])
    assert "ST" not in shown
    assert shown + stream.finish() == "abc ST"


def test_reconstruct_decodes_each_window_to_its_own_length(text_rcc):
    memory = text_rcc.compress(DOC)
    ids = text_rcc.encode_text(text_rcc.reconstruct(memory))
    assert abs(len(ids) - memory.token_count) <= memory.num_windows * 2  # re-tokenising may merge at seams


def test_ask_in_both_prompt_modes_returns_text(text_rcc):
    plain = text_rcc.ask(text_rcc.compress(DOC), "What did the keeper write?", max_new_tokens=5)
    reconstructed = text_rcc.ask(text_rcc.compress(DOC + "\n\nWhat did the keeper write?"), max_new_tokens=5)
    assert isinstance(plain, str) and isinstance(reconstructed, str)


@pytest.mark.parametrize("bad", [3.5, [{"content": "no role"}]])
def test_bad_prompts_are_type_errors(text_rcc, bad):
    with pytest.raises(TypeError):
        text_rcc.generate(text_rcc.compress(DOC), bad, max_new_tokens=2)


def scripted(tokens):
    """A stand-in for the decoder's choices: yields a fixed token sequence, to test our own text handling."""

    def decode_tokens(model, state, params):
        for token in tokens[: params.max_new_tokens]:
            yield torch.tensor([token])

    return decode_tokens


def test_instruction_reconstruction_returns_only_the_answer(text_rcc, smollm2_tokenizer, monkeypatch):
    script = "What did the keeper write?<|im_end|>\n<|im_start|>assistant\nThe date.<|im_end|>ignored"
    tokens = smollm2_tokenizer(script, add_special_tokens=False)["input_ids"]
    monkeypatch.setattr("rcc_model.generation.decode_tokens", scripted(tokens))
    assert text_rcc.ask(text_rcc.compress(DOC), max_new_tokens=64) == "The date."


def test_instruction_reconstruction_that_never_closes_the_question_returns_nothing(text_rcc, smollm2_tokenizer,
                                                                                  monkeypatch):
    tokens = smollm2_tokenizer("What did the keeper", add_special_tokens=False)["input_ids"]
    monkeypatch.setattr("rcc_model.generation.decode_tokens", scripted(tokens))
    assert text_rcc.ask(text_rcc.compress(DOC), max_new_tokens=64) == ""
