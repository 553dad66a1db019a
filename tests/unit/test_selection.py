"""Compress, select, expand (`rcc_model.reading`, `rcc_model.ranking`): the best windows read as text, their
neighbourhood as slots, within budgets; BM25 fused with an embedding ranking; the choice visible."""

import dataclasses

import pytest

from rcc_model import (
    PART_SEPARATOR,
    CompressedMemory,
    GenerationInfo,
    ReadingPolicy,
    question_parts,
    read_within,
    reading_for,
)
from rcc_model.prompts import with_context
from rcc_model.ranking import bm25, rank_windows, reciprocal_rank_fusion

# one short sentence per window (each compressed on its own, so window i holds sentence i exactly)
SENTENCES = [
    "The harbour office opens at nine and the harbour clerk keeps the harbour ledger.",
    "Gulls nest on the breakwater every spring.",
    "The ferry to the island departs every morning at seven sharp.",
    "Bakers by the quay sell rye bread, seed cakes, honey buns and plum tarts to sailors.",
    "The lighthouse keeper is Amara Quist, since last winter.",
    "Fishing boats return in the late afternoon.",
]
PARAPHRASE = "When does a boat leave the quay for the isle?"  # its rare word is the bakery's (window 3)
CONCEPTS = {"ferry": "boat", "boat": "boat", "boats": "boat", "departs": "leave", "leave": "leave",
            "island": "isle", "isle": "isle", "bakers": "bread", "bread": "bread", "cakes": "bread", "gulls": "bird",
            "lighthouse": "light", "keeper": "light", "office": "office", "ledger": "office"}


def fake_embed(texts):
    """A deterministic embedding that knows a few concepts (synonyms as one) and nothing else."""
    axes = sorted(set(CONCEPTS.values()))
    vectors = []
    for text in texts:
        words = text.lower().replace(".", " ").replace("?", " ").replace(",", " ").split()
        vectors.append([0.01] + [float(sum(CONCEPTS.get(w) == axis for w in words)) for axis in axes])
    return vectors


def window_memory(model, sentences=SENTENCES) -> CompressedMemory:
    return CompressedMemory.concat([model.compress(s) for s in sentences])


def test_fusion_ranks_a_paraphrased_fact_first_where_bm25_alone_misses_it():
    lexical, name = rank_windows(PARAPHRASE, SENTENCES)
    assert name == "bm25" and max(range(6), key=lexical.__getitem__) == 3  # the quay, not the ferry
    fused, name = rank_windows(PARAPHRASE, SENTENCES, fake_embed)
    assert name == "bm25+embedding" and max(range(6), key=fused.__getitem__) == 2


def test_reciprocal_rank_fusion_adds_one_over_k_plus_rank_and_ties_share_the_better_rank():
    fused = reciprocal_rank_fusion([[3.0, 0.0, 0.0], [0.1, 0.9, 0.5]], k=1)
    assert fused == pytest.approx([1 / 2 + 1 / 4, 1 / 3 + 1 / 2, 1 / 3 + 1 / 3])


def test_a_tie_in_the_fused_ranking_goes_to_the_embeddings_favourite():
    texts = ["the dues are forty dollars a year", "the tournament is held twice a year"]
    vectors = {texts[0]: [1.0, 0.0], texts[1]: [0.6, 0.8], "What is the yearly membership fee?": [0.9, 0.1]}
    scores, _ = rank_windows("What is the yearly membership fee?", texts, lambda ts: [vectors[t] for t in ts])
    assert bm25("What is the yearly membership fee?", texts)[0] <= bm25("What is the yearly membership fee?",
                                                                         texts)[1]
    assert scores[0] > scores[1]


def test_the_best_windows_are_expanded_within_tokens_and_their_neighbours_read_compressed(text_rcc):
    memory = window_memory(text_rcc)
    texts = [memory.window_texts]
    one = memory.window_tokens[4]
    slots = [w.num_slots for w in memory.windows()]
    reading = read_within("Who is the lighthouse keeper?", [memory], texts, budget=min(slots[3], slots[5]),
                          expand_tokens=one)
    assert reading.expanded == [[4]] and reading.expanded_tokens == one <= one
    assert "Amara Quist" in reading.context and reading.context in reading.prompt("Who?")
    (compressed,) = reading.windows[0]
    assert compressed in (3, 5)  # a neighbour of the expanded window, within the slot budget
    assert reading.memory.num_slots <= min(slots[3], slots[5]) and reading.windows_read == 2
    assert reading.selected and reading.ranking == "bm25"
    choices = reading.choices
    assert [(c.window, c.read) for c in choices] == [(4, "expanded"), (compressed, "compressed")]
    assert choices[0].score > 0 and reading.metadata()["windows"][0] == dataclasses.asdict(choices[0])


def test_next_ranked_windows_come_after_the_neighbours_and_no_window_is_read_twice(text_rcc):
    memory = window_memory(text_rcc)
    slots = [w.num_slots for w in memory.windows()]
    question = "When does the ferry to the island depart from the harbour office?"
    reading = read_within(question, [memory], [memory.window_texts], budget=slots[1] + slots[3] + slots[0],
                          expand_tokens=memory.window_tokens[2])
    assert reading.expanded == [[2]]
    assert reading.windows == [[0, 1, 3]]  # neighbours 1 and 3, then the next-ranked window 0 (harbour office)
    assert reading.metadata()["compressed_slots"] == reading.memory.num_slots <= slots[0] + slots[1] + slots[3]


def test_expanded_text_is_in_document_order_and_joins_consecutive_windows(text_rcc):
    memory = window_memory(text_rcc)
    question = "Who is the lighthouse keeper, and when does the ferry to the island depart?"
    reading = read_within(question, [memory], [memory.window_texts], budget=0, expand_tokens=10**6)
    assert reading.windows == [[]] and reading.memory.num_slots == 0  # all of it as text, no slots
    flat = reading.expanded[0]
    assert flat == sorted(flat) and {2, 4} <= set(flat)
    assert reading.context.index("ferry") < reading.context.index("lighthouse")
    assert read_within("q", [memory], [memory.window_texts], 0, expand_tokens=1).expanded == [[]]  # none fits


def test_a_window_expanded_with_nothing_else_to_read_as_slots_is_read_as_slots_too(text_rcc):
    memory = text_rcc.compress(SENTENCES[4])  # one window: expanded, it leaves no neighbour
    slots = memory.num_slots
    reading = read_within("Who is the lighthouse keeper?", [memory], [memory.window_texts], budget=slots,
                          expand_tokens=memory.window_tokens[0])
    assert reading.expanded == [[0]] and reading.windows == [[0]] and reading.memory.num_slots == slots
    assert reading.windows_read == 1 and [c.read for c in reading.choices] == ["expanded", "compressed"]
    unslotted = read_within("Who is the lighthouse keeper?", [memory], [memory.window_texts], budget=slots - 1,
                            expand_tokens=memory.window_tokens[0])
    assert unslotted.expanded == [[0]] and unslotted.windows == [[]]  # the slot budget still bounds it


def test_expand_budget_zero_is_todays_reading(text_rcc):
    memory = window_memory(text_rcc)
    slots = memory.windows()[4].num_slots
    today = read_within("Who is the lighthouse keeper?", [memory], [memory.window_texts], budget=slots)
    zero = read_within("Who is the lighthouse keeper?", [memory], [memory.window_texts], budget=slots,
                       expand_tokens=0)
    assert today.windows == zero.windows == [[4]] and zero.expanded == [[]] and zero.context == ""


def test_without_an_embedding_bm25_alone_ranks_and_with_one_the_paraphrase_is_expanded(text_rcc):
    memory = window_memory(text_rcc)
    tokens = memory.window_tokens[3]  # the quay's window, the longest: room for it alone
    plain = read_within(PARAPHRASE, [memory], [memory.window_texts], budget=0, expand_tokens=tokens)
    fused = read_within(PARAPHRASE, [memory], [memory.window_texts], budget=0, expand_tokens=tokens,
                        embed=fake_embed)
    assert plain.ranking == "bm25" and plain.expanded == [[3]] and "ferry" not in plain.context
    assert fused.ranking == "bm25+embedding" and fused.choices[0].window == 2 and "ferry" in fused.context


def test_the_prompt_gets_the_text_before_the_question_in_its_last_user_turn():
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Who?"}]
    assert with_context(chat, "Notes.")[1]["content"] == "Notes.\n\nWho?" and chat[1]["content"] == "Who?"
    assert with_context("Who?", "") == "Who?" and with_context("Who?", "Notes.") == "Notes.\n\nWho?"
    with pytest.raises(ValueError, match="user turn"):
        with_context([{"role": "system", "content": "x"}], "Notes.")
    with pytest.raises(ValueError, match="non-negative"):
        ReadingPolicy(expand_tokens=-1)


def test_ask_and_stream_read_through_the_engine_with_the_models_budgets(text_rcc):
    memory = window_memory(text_rcc)
    slots = [w.num_slots for w in memory.windows()]
    text_rcc.config = dataclasses.replace(text_rcc.config, read_slots=min(slots[3], slots[5]),
                                          expand_tokens=memory.window_tokens[4])
    info = GenerationInfo()
    question = "Who is the lighthouse keeper?"
    streamed = "".join(text_rcc.stream(memory, question, max_new_tokens=4, info=info))
    assert info.reading.expanded == [[4]] and info.reading.windows_read == 2
    assert info.prompt_tokens == len(text_rcc.encode_text(info.reading.prompt(question)))
    assert info.memory_slots == info.reading.memory.num_slots
    assert streamed == text_rcc.generate(memory, question, max_new_tokens=4)
    read, reading = reading_for(text_rcc, memory, question, text_rcc.config.read_slots,
                                expand_tokens=text_rcc.config.expand_tokens)
    chat = reading.prompt([{"role": "user", "content": question}])
    assert text_rcc.ask(memory, question, max_new_tokens=4) == text_rcc.generate(read, chat, max_new_tokens=4,
                                                                                 reading=None)
    whole = GenerationInfo()  # reading=None: the memory as given, the question alone
    list(text_rcc.stream(memory, question, max_new_tokens=2, info=whole, reading=None))
    assert whole.reading is None and whole.memory_slots == memory.num_slots
    custom = GenerationInfo()  # a policy per call: slots only
    list(text_rcc.stream(memory, question, max_new_tokens=2, info=custom, reading=ReadingPolicy(expand_tokens=0)))
    assert custom.reading.expanded == [[]] and custom.reading.windows == [[4]]


def test_compress_keeps_window_text_by_default_and_drops_it_on_request(text_rcc, tmp_path):
    text = " ".join(SENTENCES * 3)
    kept, bare = text_rcc.compress(text), text_rcc.compress(text, keep_text=False)
    assert kept.window_texts == text_rcc.window_texts(text) and bare.window_texts is None
    kept_file, bare_file = kept.save(tmp_path / "kept.rccmem"), bare.save(tmp_path / "bare.rccmem")
    extra = kept_file.stat().st_size - bare_file.stat().st_size
    assert 0 < extra < 2 * len(text.encode())  # the text (JSON-escaped), beside the slots


def test_json_generation_reads_a_long_memory_through_the_engine_too(text_rcc, monkeypatch):
    import rcc_model.generation as generation

    memory = window_memory(text_rcc)
    slots = memory.windows()[4].num_slots  # the keeper's window alone
    text_rcc.config = dataclasses.replace(text_rcc.config, read_slots=slots)
    seen = []
    monkeypatch.setattr(generation.structured, "generate_json",
                        lambda model, state, schema, limit: seen.append(state.num_slots) or (None, False))
    text_rcc.generate_json(memory, "Who is the lighthouse keeper?", {"type": "string"})
    text_rcc.generate_json(memory, "Who is the lighthouse keeper?", {"type": "string"}, reading=None)
    assert seen == [slots, memory.num_slots]


def test_slots_only_with_an_embedding_read_the_fused_best_then_its_neighbours(text_rcc):
    memory = window_memory(text_rcc)
    slots = [w.num_slots for w in memory.windows()]
    reading = read_within(PARAPHRASE, [memory], [memory.window_texts], budget=slots[2] + slots[1] + slots[3],
                          embed=fake_embed)
    assert reading.windows == [[1, 2, 3]] and reading.expanded == [[]]  # the ferry, then its neighbours
    lexical = read_within(PARAPHRASE, [memory], [memory.window_texts], budget=slots[3])
    assert lexical.windows == [[3]]  # BM25 alone: the bakery by the quay


def test_a_question_that_asks_two_things_is_split_before_and_and_a_question_word():
    assert question_parts("What is the code of the tower, and who keeps the mill?") == [
        "What is the code of the tower?", "Who keeps the mill?"]
    assert question_parts("who keeps it, and when did it open, and how tall is it") == [
        "Who keeps it?", "When did it open?", "How tall is it?"]
    for whole in ("Who keeps the mill?", "Is it red, and blue?", "Where and when did it open?",
                  "Read this report.\nWhat is the code, and who keeps it?"):  # one thing; a text with its question
        assert question_parts(whole) == [whole]


def test_a_two_part_question_is_answered_part_by_part_each_with_its_own_reading(text_rcc):
    memory = window_memory(text_rcc)
    text_rcc.config = dataclasses.replace(text_rcc.config, read_slots=memory.windows()[5].num_slots,
                                          expand_tokens=max(memory.window_tokens))
    question = "Who is the lighthouse keeper, and when does the ferry to the island depart?"
    parts = question_parts(question)
    info = GenerationInfo()
    answer = "".join(text_rcc.stream(memory, [{"role": "user", "content": question}], max_new_tokens=3, info=info))
    best = [p.reading.choices[0] for p in info.parts]  # the keeper's window, then the ferry's
    assert [(c.window, c.read) for c in best] == [(4, "expanded"), (2, "expanded")]
    assert answer == PART_SEPARATOR.join(text_rcc.ask(memory, p, max_new_tokens=3) for p in parts)
    assert text_rcc.ask(memory, question, max_new_tokens=3) == answer
    assert info.output_tokens == sum(p.output_tokens for p in info.parts) and info.reading is None
    whole = GenerationInfo()  # asked whole: one reading, for the whole question
    list(text_rcc.stream(memory, question, max_new_tokens=1, info=whole,
                         reading=ReadingPolicy(split_questions=False)))
    assert not whole.parts and whole.reading is not None
