"""Reading part of a memory within a slot budget (`rcc_model.reading`): ranking, budget, order, edge cases."""

import pytest

from rcc_model.reading import bm25, read_within, reading_for

FILLER = "The ferry left the quay at dawn and the gulls followed it out past the breakwater. "


def test_bm25_prefers_rare_matching_words_and_scores_no_match_zero():
    texts = ["the access code of the tower is 51950", "the tower bell rang", "gulls over a quay"]
    scores = bm25("What is the access code of the tower?", texts)
    assert scores[0] > scores[1] > scores[2] == 0.0
    assert bm25("anything", []) == []


def test_everything_is_read_while_it_fits(text_rcc):
    memory = text_rcc.compress(FILLER * 4)
    reading = read_within("Which ferry?", [memory], [None], budget=memory.num_slots)
    assert reading.memory is memory and not reading.selected  # one memory read whole is not copied
    assert reading.windows == [list(range(memory.num_windows))]


def test_over_budget_the_best_windows_are_read_in_document_order(text_rcc):
    first, second = FILLER * 3 + "The lighthouse keeper is Amara Quist. ", FILLER * 3
    memories = [text_rcc.compress(first), text_rcc.compress(second)]
    texts = [text_rcc.window_texts(first), text_rcc.window_texts(second)]
    assert len(texts[0]) == memories[0].num_windows
    slots = text_rcc.config.window // text_rcc.config.rate
    reading = read_within("Who is the lighthouse keeper?", memories, texts, budget=slots)
    (chosen,) = reading.windows[0]
    assert "lighthouse" in texts[0][chosen] and reading.windows[1] == [] and reading.selected
    assert reading.memory.num_slots <= slots and reading.scores[0][0] > 0
    wider = read_within("Who is the lighthouse keeper?", memories, texts, budget=3 * slots)
    flat = [(i, j) for i, js in enumerate(wider.windows) for j in js]
    assert (0, chosen) in flat and len(flat) == 3
    parts = [memories[i].windows()[j].states for i, j in flat]
    assert wider.memory.num_slots == sum(p.shape[0] for p in parts)


def test_memory_without_text_is_read_whole_and_one_window_is_always_read(text_rcc):
    given, text = text_rcc.compress(FILLER * 3), FILLER * 3
    reading = read_within("ferry", [given, text_rcc.compress(text)], [None, text_rcc.window_texts(text)], budget=1)
    assert reading.windows[0] == list(range(given.num_windows)) and len(reading.windows[1]) == 1


def test_mismatched_inputs_are_refused(text_rcc):
    memory = text_rcc.compress(FILLER * 3)
    with pytest.raises(ValueError, match="at least one memory"):
        read_within("q", [], [], budget=8)
    with pytest.raises(ValueError, match="texts for 2"):
        read_within("q", [memory], [None, None], budget=8)
    with pytest.raises(ValueError, match="window texts"):
        read_within("q", [memory], [["only one"]], budget=1)


def test_the_text_of_what_is_read_comes_with_it_when_every_window_has_its_text(text_rcc):
    first, second = FILLER * 3 + "The lighthouse keeper is Amara Quist. ", FILLER * 3
    memories = [text_rcc.compress(first), text_rcc.compress(second)]
    texts = [text_rcc.window_texts(first), text_rcc.window_texts(second)]
    whole = read_within("Who is the lighthouse keeper?", memories, texts, budget=10**6)
    assert whole.texts == texts[0] + texts[1]
    slots = text_rcc.config.window // text_rcc.config.rate
    part = read_within("Who is the lighthouse keeper?", memories, texts, budget=slots)
    assert part.texts == [texts[0][part.windows[0][0]]]
    assert read_within("ferry", memories, [None, texts[1]], budget=10**6).texts is None


def test_a_model_reads_what_its_budget_holds_at_its_alignments_or_all_as_stored(text_rcc):
    import dataclasses

    text_rcc.config = dataclasses.replace(text_rcc.config, read_alignments=2)
    report = FILLER * 3 + "The lighthouse keeper is Amara Quist. " + FILLER * 3
    kept = text_rcc.compress(report, keep_text=True)
    slots = text_rcc.config.window // text_rcc.config.rate
    read, reading = reading_for(text_rcc, kept, "Who is the lighthouse keeper?", slots)
    (chosen,) = reading.windows[0]
    assert "lighthouse" in kept.window_texts[chosen] and reading.selected
    assert len(read.views) == 2 and read.views[0].states.equal(kept.windows()[chosen].states)
    whole, reading = reading_for(text_rcc, kept, "Who is the lighthouse keeper?", None)
    assert whole is kept and reading.windows == [list(range(kept.num_windows))]
    bare = text_rcc.compress(report, keep_text=False)  # no text to rank or realign: read whole, as stored
    with pytest.warns(UserWarning, match="cannot be ranked"):
        assert reading_for(text_rcc, bare, "Who is the lighthouse keeper?", slots)[0] is bare
    given, _ = reading_for(text_rcc, bare, "Who is the lighthouse keeper?", slots, kept.window_texts)
    assert len(given.views) == 2 and given.num_slots == slots
