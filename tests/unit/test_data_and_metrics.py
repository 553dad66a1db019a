"""Data preparation (Info parsing, splits, generated QA) and evaluation metrics."""

import math
import random
import re

import pytest

from rcc_model.data import qa
from rcc_model.data.build import split_documents
from rcc_model.data.sources import Document, Synset, info_documents
from rcc_model.evaluation.metrics import corpus_bleu4, digits_in_place, exact_match, rouge_l, token_accuracy, token_f1

INFO = (
    "preamble\n\x1f\nFile: python3.11.info,  Node: Lists,  Next: Tuples,  Up: Data\n\n"
    "5.1 Lists\n*********\n\nA list is ordered; see *note list.append(): 1f2. for more. " + "Lists grow. " * 20 +
    "\n\n   ---------- Footnotes ----------\n\n   (1) https://example.invalid\n"
    "\x1f\nFile: python3.11.info,  Node: Tuples,  Up: Data\n\nshort\n"
)


def test_info_nodes_become_documents_without_markup_or_footnotes():
    docs = list(info_documents(INFO, "python-docs"))
    assert [d.title for d in docs] == ["Lists"]  # "Tuples" is too short to keep
    assert "see list.append() for more" in docs[0].text
    assert "*****" not in docs[0].text and "Footnotes" not in docs[0].text and "example.invalid" not in docs[0].text


def test_the_split_is_deterministic_disjoint_and_by_runs_of_documents():
    docs = [Document("s", f"title {i}", "text") for i in range(4000)]
    first, again = split_documents(docs, 0.1), split_documents(docs, 0.1)
    assert first == again
    assert len(first.train) + len(first.heldout) == 4000 and 0 < len(first.heldout) < 1000
    assert not {d.title for d in first.train} & {d.title for d in first.heldout}


TEXT = "The first sentence is here. " * 40


def test_a_hidden_fact_is_in_the_context_and_answers_the_question():
    for seed in range(20):
        example = qa.fact_example(TEXT, random.Random(seed))
        assert example.answer in example.context and example.kind == "fact"
        assert len(example.context) > len(TEXT)


def test_an_unanswerable_question_has_no_fact_about_its_subject():
    for seed in range(20):
        example = qa.fact_example(TEXT, random.Random(seed), facts=2, answerable=False)
        subject = example.question.rstrip("?").split(" the ", 1)[1]
        assert example.answer == qa.NOT_IN_DOCUMENT and subject not in example.context


def test_varied_phrasing_words_facts_many_ways_and_keeps_the_needle_phrasing_out():
    varied = qa.Wording(phrasing="varied")
    examples = [qa.fact_example(TEXT, random.Random(seed), wording=varied) for seed in range(200)]
    assert all(e.answer in e.context for e in examples)
    assert len({e.question.split(" the ")[0] for e in examples}) > 10  # many question forms, not four
    codes = [e.answer for e in examples if e.answer.isdigit() and "year" not in e.question
             and not e.question.startswith("When")]
    assert {len(code) for code in codes} == {4, 5, 6, 7}
    assert not any("secret" in e.context.lower() or "secret" in e.question.lower() for e in examples)
    unanswerable = qa.fact_example(TEXT, random.Random(1), facts=2, answerable=False,
                                    wording=varied)
    assert unanswerable.answer == qa.NOT_IN_DOCUMENT
    fixed = {qa.fact_example(TEXT, random.Random(seed)).question.split(" the ")[0] for seed in range(200)}
    assert fixed == {"What is", "Who is", "In which year was", "What colour is"}  # what shipped stages saw
    with pytest.raises(ValueError, match="phrasing"):
        qa.Wording(phrasing="other")


def test_open_values_give_every_keeper_a_new_name_and_fixed_values_keep_the_shipped_ten():
    def keepers(values: str) -> list[str]:
        wording = qa.Wording(values=values)
        examples = [qa.fact_example(TEXT, random.Random(seed), wording=wording) for seed in range(400)]
        assert all(e.answer in e.context for e in examples)
        return [e.answer for e in examples if e.question.startswith("Who")]

    fixed, generated = keepers("fixed"), keepers("open")
    assert len(set(fixed)) <= 10 and len(fixed) > 50
    assert len(generated) > 50 and len(set(generated)) > 0.9 * len(generated)
    assert all(name.istitle() and len(name.split()) == 2 for name in generated)
    with pytest.raises(ValueError, match="values"):
        qa.Wording(values="other")


def test_codes_set_the_share_of_facts_that_are_codes_and_leave_other_sets_unchanged():
    synsets = [Synset(f"w{i}", "noun", f"gloss {i}", ()) for i in range(30)]
    plain = qa.generate([TEXT], synsets, 400, seed=3)
    assert qa.generate([TEXT], synsets, 400, seed=3, wording=qa.Wording(codes=None)) == plain

    def code_share(examples):
        facts = [e for e in examples if e.kind == "fact"]
        return sum(len(e.answer) == 5 and e.answer.isdigit() for e in facts) / len(facts)  # years have 4 digits

    assert 0.15 < code_share(qa.generate([TEXT], synsets, 1000, seed=3)) < 0.35
    coded = qa.generate([TEXT], synsets, 1000, seed=3, wording=qa.Wording(codes=0.7, subjects="open"))
    assert 0.6 < code_share(coded) < 0.8
    assert all(e.answer in e.context for e in coded if e.kind in ("fact", "multi-fact"))
    assert code_share(qa.generate([TEXT], synsets, 300, seed=3, wording=qa.Wording(codes=0.0))) == 0.0
    for share in (1.0, -0.1):
        with pytest.raises(ValueError, match="codes"):
            qa.Wording(codes=share)


def test_instructions_end_a_share_of_questions_answerable_or_not_and_leave_other_sets_unchanged():
    synsets = [Synset(f"w{i}", "noun", f"gloss {i}", ()) for i in range(30)]
    plain = qa.generate([TEXT], synsets, 400, seed=3)
    assert qa.generate([TEXT], synsets, 400, seed=3, wording=qa.Wording(instructions=0.0)) == plain  # 0 is the default
    assert all(e.question.endswith("?") for e in plain if e.kind != "definition")  # what shipped stages saw
    instructed = qa.generate([TEXT], synsets, 400, seed=3, wording=qa.Wording(instructions=0.5))
    facts = [e for e in instructed if e.kind != "definition"]
    ended = [e for e in facts if not e.question.endswith("?")]
    assert 0.35 < len(ended) / len(facts) < 0.65
    assert {e.kind for e in ended} == {"fact", "multi-fact", "not-in-document"}  # no cue to answer
    assert all(e.question.split("? ", 1)[1].endswith(".") for e in ended)
    assert all(e.answer in e.context for e in facts if e.kind != "not-in-document")
    assert not any("Answer with the number" in e.question for e in instructed)  # the needle's own stays out
    with pytest.raises(ValueError, match="share"):
        qa.Wording(instructions=1.5)


def test_open_subjects_ask_about_described_places_and_name_codes_many_ways_but_never_as_the_needle():
    synsets = [Synset(f"w{i}", "noun", f"gloss {i}", ()) for i in range(30)]
    plain = qa.generate([TEXT], synsets, 600, seed=4)
    assert qa.generate([TEXT], synsets, 600, seed=4, wording=qa.Wording(subjects="fixed")) == plain  # the default
    opened = qa.generate([TEXT], synsets, 600, seed=4, wording=qa.Wording(values="open", subjects="open"))
    facts = [e for e in opened if e.kind in ("fact", "multi-fact")]
    assert all(e.answer in e.context for e in facts)
    codes = [e.question for e in facts if e.answer.isdigit() and len(e.answer) == 5]
    assert len({q.split(" of the ")[0].split(" for the ")[0].split(" at the ")[0] for q in codes}) > 10
    unanswerable = [e for e in opened if e.kind == "not-in-document"]
    place = re.compile(r"the ((?:[a-z]+ )?[a-z]+)(?: founded| open| date| begin)?\?")
    asked = [place.findall(e.question)[-1] for e in unanswerable]
    described = [p for p, e in zip(asked, unanswerable) if f"the {p} " in e.context or f"The {p} " in e.context]
    assert 0.35 < len(described) / len(unanswerable) < 0.65  # half ask about a place the document describes
    assert len(set(asked)) > 3 * len(qa._PLACES)  # generated, not ten
    assert not any("secret code" in e.question or "secret code" in e.context for e in opened)
    with pytest.raises(ValueError, match="subjects"):
        qa.Wording(subjects="other")


def test_like_facts_state_the_asked_kind_about_another_subject_and_leave_other_sets_unchanged():
    synsets = [Synset(f"w{i}", "noun", f"gloss {i}", ()) for i in range(30)]
    open_wording = {"values": "open", "subjects": "open", "phrasing": "varied", "codes": 0.6}
    plain = qa.generate([TEXT], synsets, 400, seed=6, wording=qa.Wording(**open_wording))
    assert qa.generate([TEXT], synsets, 400, seed=6, wording=qa.Wording(**open_wording, like_facts=0.0)) == plain
    liked = qa.generate([TEXT], synsets, 1000, seed=6, wording=qa.Wording(**open_wording, like_facts=1.0))
    questions = [e for e in liked if e.kind != "definition"]
    assert all(e.answer in e.context for e in questions if e.kind != "not-in-document")
    # A code question's document names that code for another place too (and for the asked one where
    # answerable), so the question's place, not the kind of code, tells which value answers.
    paired = 0
    for e in questions:
        asked = re.match(r"What is the (.+?) (?:of|for|at) the ([a-z ]+)\?", e.question)
        if not asked:
            continue
        naming = [s for s in re.split(r"(?<=\.) ", e.context) if f"the {asked[1]} ".lower() in s.lower()]
        about_asked = [s for s in naming if f"the {asked[2]}" in s]
        assert len(naming) - len(about_asked) >= 1
        assert bool(about_asked) == (e.kind != "not-in-document")
        paired += 1
    assert paired > 100
    with pytest.raises(ValueError, match="like_facts"):
        qa.Wording(like_facts=1.5)


def test_definition_questions_ask_about_a_word_on_the_page():
    synsets = [Synset(f"word{i}", "noun", f"meaning number {i}", ()) for i in range(50)]
    example = qa.definition_example(synsets, random.Random(0))
    assert example.answer in example.context and example.question.split('"')[1] in example.context


def test_generation_is_deterministic():
    synsets = [Synset(f"w{i}", "noun", f"gloss {i}", ()) for i in range(30)]
    assert qa.generate([TEXT], synsets, 50, seed=3) == qa.generate([TEXT], synsets, 50, seed=3)


def test_bleu4_is_one_for_identical_text_and_zero_without_shared_4grams():
    ref = ["the", "cat", "sat", "on", "the", "mat", "today"]
    assert corpus_bleu4([ref], [ref]) == pytest.approx(1.0)
    assert corpus_bleu4([["a", "b", "c", "d"]], [["e", "f", "g", "h"]]) == 0.0


def test_bleu4_brevity_penalty_punishes_short_output():
    ref = ["one", "two", "three", "four", "five", "six", "seven", "eight"]
    assert corpus_bleu4([ref[:5]], [ref]) == pytest.approx(math.exp(1 - 8 / 5))


def test_answer_metrics():
    assert exact_match("The Date.", "date") == 1.0
    assert token_f1("the red door", "red door of the hall") == pytest.approx(2 * 1.0 * 0.5 / 1.5)
    assert rouge_l("x b c d", "x c d e") == pytest.approx(0.75)  # LCS "x c d"
    assert rouge_l("a b c d", "a c d e") == pytest.approx(2 / 3)  # articles are dropped first
    assert token_accuracy([1, 2, 9], [1, 2, 3, 4]) == 0.5
    assert digits_in_place("12395", "12345") == 0.8 and digits_in_place("1234", "12345") == 0.0
