"""Beam search for reconstruction on a tiny random model with SmolLM2's tokenizer: its bookkeeping (cache rows
reordered with their hypotheses) against scores computed from scratch."""

import dataclasses
import itertools

import pytest
import torch

from rcc_model.beam_search import beam_search
from rcc_model.decoding import continuation_logprob, eos_token_ids, extend, prefill

DOC = "The lighthouse keeper wrote the date in the log every evening. " * 6


def test_one_beam_is_greedy_reconstruction(text_rcc):
    memories = text_rcc.compress([DOC, "A short note on the harbour."])
    greedy = text_rcc.generate_ids(memories, max_new_tokens=30, min_new_tokens=30)
    assert beam_search(text_rcc, memories, 30, num_beams=1).ids == greedy


def test_the_score_is_the_log_probability_of_the_tokens_returned(text_rcc):
    memories = text_rcc.compress([DOC, "A short note on the harbour."])
    result = beam_search(text_rcc, memories, 24, num_beams=3)
    with torch.no_grad():
        for memory, ids, score in zip(memories, result.ids, result.scores):
            assert len(ids) == 24
            assert continuation_logprob(text_rcc, prefill(text_rcc, [memory], [[]]), ids) == pytest.approx(
                score, abs=1e-3)


def test_two_tokens_find_the_best_pair_through_the_k_likeliest_first_tokens(text_rcc):
    memory = text_rcc.compress(DOC)
    k = 4
    with torch.no_grad():
        start = prefill(text_rcc, [memory], [[]])
        eos = sorted(eos_token_ids(text_rcc))
        first = torch.log_softmax(start.logits[0], -1).index_fill(0, torch.tensor(eos), float("-inf"))
        best = float("-inf")
        for token in first.topk(k).indices.tolist():
            second = torch.log_softmax(extend(text_rcc, start.clone(), [token]).logits[0], -1)
            best = max(best, float(first[token] + second.index_fill(0, torch.tensor(eos), float("-inf")).max()))
    assert beam_search(text_rcc, [memory], 2, num_beams=k).scores[0] == pytest.approx(best, abs=1e-4)


def test_beams_keep_the_ngram_block(text_rcc):
    memory = text_rcc.compress(DOC)
    ids = beam_search(text_rcc, [memory], 40, num_beams=3, no_repeat_ngram_size=2).ids[0]
    bigrams = list(itertools.pairwise(ids))
    assert len(set(bigrams)) == len(bigrams)


def test_reconstruct_searches_each_window_at_its_own_length(text_rcc):
    memory = text_rcc.compress(DOC)
    windows = memory.windows()
    assert len({w.token_count for w in windows}) == 2  # whole windows and a shorter last one
    alone = [token for w in windows for token in beam_search(text_rcc, [w], w.token_count, 2).ids[0]]
    assert text_rcc.reconstruct(memory, num_beams=2, batch_size=8) == text_rcc.tokenizer.decode(
        alone, skip_special_tokens=True)
    with pytest.raises(ValueError, match="num_beams"):
        text_rcc.reconstruct(memory, num_beams=0)


def test_reconstruct_decodes_as_the_models_settings_say_unless_told(text_rcc):
    memory = text_rcc.compress(DOC)
    checked = text_rcc.reconstruct(memory, num_beams=2, verify=5.0, anchored=True)
    greedy = text_rcc.reconstruct(memory)  # this model's settings: greedy
    assert checked != greedy
    text_rcc.config = dataclasses.replace(text_rcc.config, reconstruct_beams=2, reconstruct_verify=5.0,
                                          reconstruct_anchored=True)
    assert text_rcc.reconstruct(memory) == checked
    assert text_rcc.reconstruct(memory, num_beams=1, verify=0, anchored=False) == greedy
    assert text_rcc.reconstruct(memory, anchored=False) == text_rcc.reconstruct(memory, num_beams=2, verify=5.0,
                                                                                 anchored=False)


def test_the_reconstruction_protocol_reads_by_beam_search_to_known_lengths_only(text_rcc):
    import numpy as np

    from rcc_model.evaluation.protocols import reconstruction

    tokens = np.array(text_rcc.encode_text(DOC * 2))
    result = reconstruction(text_rcc, tokens, windows=2, num_beams=2)
    assert result["num_beams"] == 2 and 0 <= result["bleu4"] <= 1
    with pytest.raises(ValueError, match="known length"):
        reconstruction(text_rcc, tokens, windows=2, num_beams=2, stop_at_eos=True)
    text_rcc.config = dataclasses.replace(text_rcc.config, reconstruct_beams=2, reconstruct_anchored=True)
    own = reconstruction(text_rcc, tokens, windows=2)  # the model's own settings, recorded
    assert (own["num_beams"], own["verify"], own["anchored"]) == (2, 0.0, True)
    assert reconstruction(text_rcc, tokens, windows=2, stop_at_eos=True)["num_beams"] == 1  # EOS: greedy


def test_anchors_are_the_tokens_at_the_slot_positions(text_rcc):
    from rcc_model.beam_search import anchor_tokens
    from rcc_model.windows import slot_positions

    ids = text_rcc.encode_text(DOC)[:30]  # one window of 32 with a partial last block
    memory = text_rcc.compress(ids)
    positions = slot_positions(len(ids), text_rcc.config.rate)
    assert anchor_tokens(text_rcc, memory) == [ids[p] for p in positions]
    written = beam_search(text_rcc, [memory], len(ids), num_beams=2, anchored=True).ids[0]
    assert [written[p] for p in positions] == [ids[p] for p in positions]


def test_a_verified_score_pays_the_distance_of_each_block_re_encoded(text_rcc):
    from rcc_model.beam_search import state_distance

    ids = text_rcc.encode_text(DOC)[:30]
    memory = text_rcc.compress(ids)
    result = beam_search(text_rcc, [memory], len(ids), num_beams=3, verify=5.0)
    written = result.ids[0]
    with torch.no_grad():
        log_prob = continuation_logprob(text_rcc, prefill(text_rcc, [memory], [[]]), written)
        paid = state_distance(text_rcc.compress(written).states, memory.states).sum()  # every slot, whole
    assert result.scores[0] == pytest.approx(log_prob - 5.0 * float(paid), abs=1e-3)


def test_checking_against_the_memory_needs_one_window_per_memory(text_rcc):
    memory = text_rcc.compress(DOC)  # three windows
    with pytest.raises(ValueError, match="one window"):
        beam_search(text_rcc, [memory], memory.token_count, num_beams=2, verify=1.0)
    with pytest.raises(ValueError, match="verify"):
        beam_search(text_rcc, memory.windows()[:1], 32, num_beams=2, verify=-1.0)
