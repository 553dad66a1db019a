"""Text paths (tokenizer, chat template, stop strings, streaming) on a tiny model with SmolLM2's tokenizer."""

import itertools

import pytest
import torch

from rcc_model import ANCHORED_GREEDY, aligned_views, reconstruct_windows, reconstruction_prompt
from rcc_model.decoding import SamplingParams
from rcc_model.prompts import instruction_frame, prompt_ids
from rcc_model.text_stream import TextStream

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


def test_reconstruct_joins_the_reconstruction_of_each_window(text_rcc):
    memory = text_rcc.compress(DOC)
    rows = reconstruct_windows(text_rcc, memory)
    assert [len(row) for row in rows] == [window.token_count for window in memory.windows()]
    joined = text_rcc.tokenizer.decode([t for row in rows for t in row], skip_special_tokens=True)
    assert text_rcc.reconstruct(memory) == joined


def test_an_answer_from_the_reconstruction_reads_the_reconstructed_window_that_matches(text_rcc, monkeypatch):
    filler = "Real text does not repeat itself like filler does. " * 6
    report = filler[:60] + "The door of the depot is painted teal. " + filler * 2
    memory = text_rcc.compress(report)
    perfect = text_rcc._windows_of(text_rcc.encode_text(report))  # stands in for a reconstruction without error
    searched = []
    monkeypatch.setattr("rcc_model.reconstruction.reconstruct_windows",
                        lambda model, m, **search: searched.append(search) or perfect)
    question = "What colour is the door of the depot?"
    system = {"role": "system", "content": "Answer briefly."}
    chat, reading = reconstruction_prompt(text_rcc, memory, [system, {"role": "user", "content": question}],
                                                   read_slots=8, num_beams=1)  # one 32-token window
    assert (reading.windows_read, reading.windows_held) == (1, memory.num_windows) and memory.num_windows > 3
    text, _, asked = chat[1]["content"].rpartition("\n\n")
    assert chat[0] == system and chat[1]["role"] == "user" and asked == question
    assert "door of the depot is painted teal" in text and searched[-1] == {"num_beams": 1}
    whole, reading = reconstruction_prompt(text_rcc, memory, question)  # a string prompt; no budget: all of it
    decode = text_rcc.tokenizer.decode
    assert whole == "".join(decode(w, skip_special_tokens=True) for w in perfect) + "\n\n" + question
    assert reading.windows_read == memory.num_windows
    answer = text_rcc.ask_from_reconstruction(memory, question, read_slots=8, max_new_tokens=4)
    assert answer == text_rcc.generate(text_rcc.empty_memory(), chat[1:], max_new_tokens=4)  # no memory read
    with pytest.raises(ValueError, match="user turn"):
        reconstruction_prompt(text_rcc, memory, [{"role": "assistant", "content": "Hello."}])


def test_windows_ranked_on_cheap_reconstructions_are_read_from_the_search_given(text_rcc, monkeypatch):
    filler = "Real text does not repeat itself like filler does. " * 6
    report = filler[:60] + "The door of the depot is painted teal. " + filler * 2
    memory = text_rcc.compress(report)
    perfect = text_rcc._windows_of(text_rcc.encode_text(report))  # the cheap pass, here without error
    checked = text_rcc.encode_text("The door is teal.")  # what the search given writes for each window read
    calls = []

    def reconstruct_windows(model, m, **search):
        calls.append((m.num_windows, search))
        return perfect if search == ANCHORED_GREEDY else [checked] * m.num_windows

    monkeypatch.setattr("rcc_model.reconstruction.reconstruct_windows", reconstruct_windows)
    question = "What colour is the door of the depot?"
    prompt, reading = reconstruction_prompt(text_rcc, memory, question, read_slots=8, rank=ANCHORED_GREEDY,
                                                     num_beams=8)
    (window,) = reading.windows[0]
    assert "painted teal" in text_rcc.tokenizer.decode(perfect[window])  # ranked on the cheap pass
    assert prompt == f"The door is teal.\n\n{question}"  # read from the search given, that window alone
    assert calls == [(memory.num_windows, ANCHORED_GREEDY), (1, {"num_beams": 8})]
    calls.clear()
    reconstruction_prompt(text_rcc, memory, question, rank=ANCHORED_GREEDY, num_beams=8)  # all fits: nothing ranked
    assert calls == [(memory.num_windows, {"num_beams": 8})]


def test_ask_returns_text(text_rcc):
    """(Without a question, see tests/unit/test_reliability.py: a random decoder recalls none.)"""
    plain = text_rcc.ask(text_rcc.compress(DOC), "What did the keeper write?", max_new_tokens=5)
    assert isinstance(plain, str)


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


def test_instruction_reconstruction_stops_at_any_of_the_models_end_tokens(text_rcc, smollm2_tokenizer, monkeypatch):
    script = "What did the keeper write?<|im_end|>\n<|im_start|>assistant\nThe date.<|endoftext|>ignored<|im_end|>"
    tokens = smollm2_tokenizer(script, add_special_tokens=False)["input_ids"]
    monkeypatch.setattr("rcc_model.generation.decode_tokens", scripted(tokens))
    ends = [smollm2_tokenizer.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|endoftext|>")]
    monkeypatch.setattr(text_rcc.decoder.generation_config, "eos_token_id", ends)
    assert text_rcc.ask(text_rcc.compress(DOC), max_new_tokens=64) == "The date."


def test_instruction_reconstruction_that_never_closes_the_question_is_an_error(text_rcc, smollm2_tokenizer,
                                                                               monkeypatch):
    """Not an empty answer, which reads like one the model gave."""
    tokens = smollm2_tokenizer("What did the keeper", add_special_tokens=False)["input_ids"]
    monkeypatch.setattr("rcc_model.generation.decode_tokens", scripted(tokens))
    with pytest.raises(ValueError, match="no question was recalled"):
        text_rcc.ask(text_rcc.compress(DOC), max_new_tokens=64)


def test_compressing_at_an_offset_moves_every_slot_boundary_and_keeps_every_token(text_rcc):
    memory, moved = text_rcc.compress(DOC), text_rcc.compress(DOC, offset=2)
    assert moved.window_tokens[0] == 2 and sum(moved.window_tokens) == memory.token_count == moved.token_count
    assert [len(w) for w in text_rcc._windows_of(text_rcc.encode_text(DOC)[2:])] == moved.window_tokens[1:]
    assert text_rcc.compress(DOC, offset=0).states.equal(memory.states)
    assert text_rcc.compress("Hi", offset=2).window_tokens == [1]  # too short to move: compressed as it is
    with pytest.raises(ValueError, match="offset"):
        text_rcc.compress(DOC, offset=text_rcc.config.window)


def _greedy_over_views(model, memories, prompt: str, steps: int) -> list[int]:
    """Greedy decoding from the mean of each memory's next-token log-probabilities, every step from scratch
    (no shared cache): what decoding `MemoryViews` must equal."""
    ids = prompt_ids(model.tokenizer, prompt)
    out: list[int] = []
    for _ in range(steps):
        logits = torch.stack([model.prefill_prompt(m, ids + out).logits[0] for m in memories])
        out.append(int(torch.log_softmax(logits, -1).mean(0).argmax()))
    return out


def test_views_decode_one_answer_from_the_mean_of_their_log_probabilities(text_rcc):
    from rcc_model import MemoryViews

    views = aligned_views(text_rcc, text_rcc.compress(DOC), [DOC], alignments=2)
    assert isinstance(views, MemoryViews) and views.views[1].window_tokens[0] == text_rcc.config.rate // 2
    assert views.views[1].states.equal(text_rcc.compress(DOC, offset=2).states)
    tokens = text_rcc.generate_ids(views, prompt_ids(text_rcc.tokenizer, "Hello"), max_new_tokens=6,
                                   min_new_tokens=6)
    assert tokens == _greedy_over_views(text_rcc, views.views, "Hello", 6)
    assert text_rcc.generate(views, "Hello", max_new_tokens=6) == text_rcc.generate(
        text_rcc.prefill_memory(views), "Hello", max_new_tokens=6)  # a prefilled memory of views, then the prompt
    twice = MemoryViews((views.views[0], views.views[0]))  # identical views read as the memory alone
    assert text_rcc.generate(twice, "Hello", max_new_tokens=8) == text_rcc.generate(views.views[0], "Hello",
                                                                                    max_new_tokens=8)


def test_one_alignment_is_the_memory_itself_and_views_come_from_one_model(text_rcc):
    from rcc_model import MemoryMismatchError, MemoryViews
    from tests.conftest import make_rcc

    memory = text_rcc.compress(DOC)
    assert aligned_views(text_rcc, memory, [DOC], alignments=1) is memory
    assert aligned_views(text_rcc, memory, [], alignments=2) is memory
    with pytest.raises(ValueError, match="alignments"):
        aligned_views(text_rcc, memory, [DOC], alignments=text_rcc.config.rate + 1)
    with pytest.raises(MemoryMismatchError):
        MemoryViews((memory, make_rcc(window=32).compress(list(range(40)))))


@pytest.mark.parametrize("alignments", [1, 2])
def test_a_continuations_log_probability_in_one_pass_equals_token_by_token(text_rcc, alignments):
    from rcc_model.decoding import continuation_logprob, extend

    memory = text_rcc.compress(DOC)
    memory = aligned_views(text_rcc, memory, [DOC], alignments=2) if alignments == 2 else memory
    ids = text_rcc.encode_text(" the lighthouse keeper")
    with torch.no_grad():
        state = text_rcc.prefill_prompt(memory, "Who wrote?")
        one_pass = continuation_logprob(text_rcc, state, ids)
        trial, stepwise = state.clone(), 0.0
        for token in ids:
            stepwise += torch.log_softmax(trial.logits[0], -1)[token].item()
            trial = extend(text_rcc, trial, [token])
        assert one_pass == pytest.approx(stepwise, abs=1e-4) and len(ids) > 2
        assert continuation_logprob(text_rcc, state, ids) == one_pass  # the state itself is left as it was


def _abstaining(text_rcc, length: int, swap_last: bool = False):
    """`text_rcc` whose abstention is the first `length` tokens of its own greedy answer to a question (the last
    one swapped for another token with `swap_last`: an answer that only begins like the abstention); the
    memory, the question and that greedy answer's ids."""
    import dataclasses

    memory = text_rcc.compress(DOC)
    question = [{"role": "user", "content": "Who wrote the log?"}]
    greedy = text_rcc.generate_ids(memory, prompt_ids(text_rcc.tokenizer, question), max_new_tokens=16)
    ids = [*greedy[:length - 1], greedy[length - 1] + 1 if swap_last else greedy[length - 1]]
    abstention = text_rcc.tokenizer.decode(ids)
    assert text_rcc.encode_text(abstention) == ids
    text_rcc.config = dataclasses.replace(text_rcc.config, abstention=abstention)
    return memory, question, greedy


def test_the_abstention_gap_is_the_two_answers_log_probabilities_apart(text_rcc):
    from rcc_model.abstention import abstention_gap
    from rcc_model.decoding import continuation_logprob

    memory, question, greedy = _abstaining(text_rcc, 3)
    end = text_rcc.tokenizer.eos_token_id
    with torch.no_grad():
        state = text_rcc.prefill_prompt(memory, question)
        weighed = abstention_gap(text_rcc, state, max_new_tokens=16)
        assert weighed is not None and weighed.other[0] != greedy[0]  # the abstention's first token ruled out
        expected = (continuation_logprob(text_rcc, state, [*greedy[:3], end])
                    - continuation_logprob(text_rcc, state, weighed.other))
    assert weighed.gap == pytest.approx(expected, abs=1e-4)
    assert text_rcc.generate_ids(weighed.ruled_out, [], max_new_tokens=16) == weighed.other[:16]
    with torch.no_grad():  # past a margin, the other answer is decoded no further: the gap is then a lower bound
        early = abstention_gap(text_rcc, state, max_new_tokens=16, margin=weighed.gap - 2)
    assert weighed.gap - 2 < early.gap <= weighed.gap + 1e-4 and early.other == weighed.other[:len(early.other)]


def test_a_greedy_abstention_gives_way_to_the_other_answer_only_within_the_margin(text_rcc):
    import dataclasses

    from rcc_model.abstention import abstention_gap

    memory, question, _ = _abstaining(text_rcc, 3)
    plain = text_rcc.generate(memory, question, max_new_tokens=16)
    assert plain.startswith(text_rcc.config.abstention)
    with torch.no_grad():
        weighed = abstention_gap(text_rcc, text_rcc.prefill_prompt(memory, question), max_new_tokens=16)
    other = text_rcc.tokenizer.decode(weighed.other, skip_special_tokens=True)
    for margin, expected in ((weighed.gap - 1, plain), (weighed.gap + 1, other)):
        text_rcc.config = dataclasses.replace(text_rcc.config, abstention_margin=margin)
        assert text_rcc.generate(memory, question, max_new_tokens=16) == expected
        assert "".join(text_rcc.stream(memory, question, max_new_tokens=16)) == expected
    sampled = text_rcc.generate(memory, question, max_new_tokens=16, temperature=1.0, seed=3)
    text_rcc.config = dataclasses.replace(text_rcc.config, abstention_margin=None)
    assert text_rcc.generate(memory, question, max_new_tokens=16, temperature=1.0, seed=3) == sampled


@pytest.mark.parametrize("max_new_tokens", [4, 16, 40])
def test_an_answer_the_weighing_chose_is_not_decoded_again(text_rcc, max_new_tokens, monkeypatch):
    """Past the prefill and one pass that scores the abstention, the decoder runs (a stock forward or a
    `StaticDecoder` step) as often as decoding the other answer plainly takes, also where the answer runs on past
    what the weighing decodes (32 tokens)."""
    import dataclasses

    from rcc_model.abstention import abstention_gap
    from rcc_model.static_decoding import StaticDecoder

    memory, question, _ = _abstaining(text_rcc, 3)
    with torch.no_grad():
        weighed = abstention_gap(text_rcc, text_rcc.prefill_prompt(memory, question), max_new_tokens=max_new_tokens)
    calls: list[int] = []
    step = StaticDecoder.step
    monkeypatch.setattr(StaticDecoder, "step", lambda *args: calls.append(1) or step(*args))
    hook = text_rcc.decoder.register_forward_pre_hook(lambda *_: calls.append(1))
    try:
        plain = text_rcc.generate_ids(weighed.ruled_out, [], max_new_tokens=max_new_tokens)
        plain_calls, calls[:] = len(calls), []
        text_rcc.config = dataclasses.replace(text_rcc.config, abstention_margin=weighed.gap + 1)
        flipped = text_rcc.generate(memory, question, max_new_tokens=max_new_tokens)
    finally:
        hook.remove()
    assert flipped == text_rcc.tokenizer.decode(plain, skip_special_tokens=True)
    assert len(calls) == 1 + 1 + plain_calls and (max_new_tokens < 40 or len(plain) > 32)


def test_an_answer_that_only_begins_like_the_abstention_is_not_weighed(text_rcc):
    from rcc_model.abstention import abstention_gap

    memory, question, _ = _abstaining(text_rcc, 3, swap_last=True)
    with torch.no_grad():
        state = text_rcc.prefill_prompt(memory, question)
        assert abstention_gap(text_rcc, state) is None
        text_rcc.config.abstention = "zzzz qqqq"  # greedy decoding does not begin it at all
        assert abstention_gap(text_rcc, state) is None


def test_an_ngram_block_longer_than_the_output_changes_nothing(text_rcc):
    memory = text_rcc.compress(DOC)
    greedy = text_rcc.generate_ids(memory, max_new_tokens=40, min_new_tokens=40)
    assert text_rcc.generate_ids(memory, max_new_tokens=40, min_new_tokens=40, no_repeat_ngram_size=41) == greedy


def test_generation_without_repeated_ngrams_repeats_none(text_rcc):
    memory = text_rcc.compress(DOC)
    ids = text_rcc.generate_ids(memory, max_new_tokens=60, min_new_tokens=60, no_repeat_ngram_size=2)
    bigrams = list(itertools.pairwise(ids))
    assert len(ids) == 60 and len(set(bigrams)) == len(bigrams)


def test_a_negative_ngram_size_is_refused():
    with pytest.raises(ValueError, match="no_repeat_ngram_size"):
        SamplingParams(no_repeat_ngram_size=-1)


def test_a_negative_margin_lets_the_abstention_replace_an_answer_it_trails_by_less(text_rcc):
    """Where greedy decoding writes another answer, the abstention is scored against it whole, and with a margin
    below 0 it replaces that answer exactly where it trails by less than the margin's size: written whole and
    ended where the token limit allows, cut at the limit where not."""
    import dataclasses

    from rcc_model.abstention import abstention_gap
    from rcc_model.decoding import continuation_logprob

    memory = text_rcc.compress(DOC)
    question = [{"role": "user", "content": "Who wrote the log?"}]
    abstention = "No log was kept."
    text_rcc.config = dataclasses.replace(text_rcc.config, abstention=abstention)
    ended = [*text_rcc.encode_text(abstention), text_rcc.tokenizer.eos_token_id]
    limit = len(ended)  # the whole abstention fits; the random model's 6-token answer is likelier (gap < -1)
    plain = text_rcc.generate(memory, question, max_new_tokens=limit)
    with torch.no_grad():
        state = text_rcc.prefill_prompt(memory, question)
        assert abstention_gap(text_rcc, state, max_new_tokens=limit) is None  # greedy decoding does not abstain
        weighed = abstention_gap(text_rcc, state, max_new_tokens=limit, weigh_answers=True)
        expected = continuation_logprob(text_rcc, state, ended) - continuation_logprob(text_rcc, state, weighed.other)
        shorter = abstention_gap(text_rcc, state, max_new_tokens=3, weigh_answers=True)  # 3 answer tokens scored
    assert not weighed.abstains and weighed.gap == pytest.approx(expected, abs=1e-4) and weighed.gap < -1
    assert text_rcc.tokenizer.decode(weighed.other, skip_special_tokens=True) == plain
    for margin, tokens, answer in ((weighed.gap - 1, limit, abstention), (weighed.gap + 1, limit, plain),
                                   (0.5, limit, plain), (shorter.gap - 1, 3, text_rcc.tokenizer.decode(ended[:3]))):
        text_rcc.config = dataclasses.replace(text_rcc.config, abstention_margin=margin)
        assert text_rcc.generate(memory, question, max_new_tokens=tokens) == answer
        assert "".join(text_rcc.stream(memory, question, max_new_tokens=tokens)) == answer
