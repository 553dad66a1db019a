import time

import pytest
import torch

from rcc_model import RCCConfig, bases
from rcc_model.windows import slot_positions, split_windows


def test_rate_must_divide_window_and_the_error_names_both():
    with pytest.raises(ValueError, match="rate=6, window=256"):
        RCCConfig(rate=6, window=256)


@pytest.mark.parametrize("rates,match", [([8], "must include"), ([4, 6], "rate=6, window=256")])
def test_every_rate_of_a_multi_rate_model_is_checked(rates, match):
    with pytest.raises(ValueError, match=match):
        RCCConfig(rate=4, rates=rates, window=256)
    assert RCCConfig(rate=8, rates=[8, 4, 8]).trained_rates == [4, 8]


@pytest.mark.parametrize("field,value", [("rate", 0), ("window", -4), ("padding", "left"), ("dtype", "int4"),
                                         ("split", "word"), ("read_slots", 0), ("read_alignments", 0),
                                         ("read_alignments", 5), ("abstention", " "),
                                         ("abstention_margin", 2.0), ("reconstruct_beams", 0),
                                         ("reconstruct_verify", -1.0), ("reconstruct_anchored", "yes")])
def test_invalid_settings_are_rejected(field, value):
    with pytest.raises(ValueError):
        RCCConfig(**{field: value})


def test_config_round_trips_through_json(tmp_path):
    config = RCCConfig(rate=8, window=64, layer_map=[[1], [1, 2]], padding="tile", abstention="Not said.",
                       abstention_margin=1.5, reconstruct_beams=8, reconstruct_verify=30, reconstruct_anchored=True)
    config.save(tmp_path)
    assert RCCConfig.load(tmp_path) == config


def test_unknown_config_fields_are_an_error():
    with pytest.raises(ValueError, match="unknown RCCConfig fields"):
        RCCConfig.from_dict({"rate": 4, "window": 16, "compression": 9})


def test_layer_map_is_checked_against_the_models():
    assert RCCConfig().resolved_layer_map(2, 3) == [[1], [2]]
    with pytest.raises(ValueError, match="one entry per decoder layer"):
        RCCConfig(layer_map=[[1]]).resolved_layer_map(2, 3)
    with pytest.raises(ValueError, match="encoder entries"):
        RCCConfig(layer_map=[[1], [3]]).resolved_layer_map(2, 3)
    with pytest.raises(ValueError, match="pass `layer_map`"):
        RCCConfig().resolved_layer_map(2, 5)


def test_masked_windows_keep_the_text_exactly():
    ids = list(range(10))
    assert split_windows(ids, 4, "masked") == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_slot_positions_close_every_block_and_a_partial_last_block():
    assert slot_positions(8, 4) == [3, 7]
    assert slot_positions(10, 4) == [3, 7, 9]


def test_tile_repeats_a_short_text_to_one_window_ending_on_its_last_token():
    assert split_windows([1, 2, 3], 8, "tile") == [[2, 3, 1, 2, 3, 1, 2, 3]]


def test_tile_repeats_ids_when_the_length_divides_the_window_release_bug_1():
    # The release multiplied token ids (ids * k) here instead of repeating the sequence.
    assert split_windows([5, 6], 8, "tile") == [[5, 6, 5, 6, 5, 6, 5, 6]]


def test_tile_adds_no_window_when_the_length_is_a_multiple_release_bug_2():
    # The release prepended a whole duplicate window when the length was a multiple of W.
    assert split_windows(list(range(8)), 4, "tile") == [[0, 1, 2, 3], [4, 5, 6, 7]]


def test_tile_left_pads_a_long_text_with_its_own_tail():
    assert split_windows(list(range(6)), 4, "tile") == [[4, 5, 0, 1], [2, 3, 4, 5]]


def test_empty_input_is_a_value_error():
    with pytest.raises(ValueError, match="empty"):
        split_windows([], 4, "masked")


def test_sentence_split_ends_windows_after_the_last_sentence_end_in_their_second_half():
    ids = [1, 2, 9, 3, 4, 5, 9, 6, 7, 8, 1, 2, 3, 4, 9, 5]  # 9 ends a sentence
    windows = split_windows(ids, 8, "masked", cuts={9})
    assert [len(w) for w in windows] == [7, 8, 1]  # 9 at index 6; no 9 in the second half of the next window
    assert [t for w in windows for t in w] == ids and all(len(w) <= 8 for w in windows)
    assert split_windows(ids, 8, "masked") == [ids[:8], ids[8:]]
    assert split_windows(ids, 8, "tile", cuts={9}) == split_windows(ids, 8, "tile")


def test_sentence_split_keeps_sentences_whole_in_a_real_model(text_rcc):
    text = " ".join(f"Sentence number {i} says little." for i in range(40))
    text_rcc.config.split = "sentence"
    try:
        pieces = text_rcc.window_texts(text)
        memory = text_rcc.compress(text)
    finally:
        text_rcc.config.split = "fixed"
    assert all(p.rstrip().endswith(".") for p in pieces) and "".join(pieces) == text
    assert memory.num_windows == len(pieces) and sum(memory.window_tokens) == memory.token_count
    assert len(text_rcc.window_texts(text)) <= len(pieces)


@pytest.mark.parametrize("fast", [True, False])
def test_auto_dtype_on_a_cpu_is_bfloat16_only_where_the_cpu_multiplies_it_in_hardware(monkeypatch, fast):
    monkeypatch.setattr(bases, "cpu_has_fast_bf16", lambda: fast)
    assert bases.resolve_dtype("auto", torch.device("cpu")) == (torch.bfloat16 if fast else torch.float32)
    assert bases.resolve_dtype("bfloat16", torch.device("cpu")) == torch.bfloat16  # asked for by name: as asked


def test_the_bf16_check_agrees_with_what_this_cpu_measures():
    """Where the check says no, a bf16 product must be far slower than float32 (emulated: ~100x on an AVX2-only
    EPYC); where it says yes, not."""
    def seconds(dtype: torch.dtype) -> float:
        a, b = torch.randn(256, 576, dtype=dtype), torch.randn(576, 576, dtype=dtype)
        a @ b
        best = float("inf")
        for _ in range(5):
            start = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - start)
        return best

    slowdown = seconds(torch.bfloat16) / seconds(torch.float32)
    assert (slowdown < 4) if bases.cpu_has_fast_bf16() else (slowdown > 4), slowdown
