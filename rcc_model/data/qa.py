"""Generated question-answer data with exact references (no QA set exists in any registry).

Kinds: a templated fact or code hidden at a random depth of real text; several facts with one asked; a
question whose answer is not in the document; and WordNet definition questions over a dictionary page.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from rcc_model.data.sources import Synset

NOT_IN_DOCUMENT = "The document does not say."

_PLACES = ["north archive", "harbour office", "east laboratory", "river station", "old observatory",
           "central depot", "mountain lodge", "city library", "signal tower", "glass workshop"]
_NAMES = ["Amara Quist", "Tomas Vell", "Ines Okafor", "Rhea Lindqvist", "Pavel Drummond", "Yuki Barros",
          "Noor Haddad", "Felix Amundsen", "Lena Ortiz", "Kofi Mensah"]
_COLOURS = ["crimson", "teal", "amber", "violet", "ochre", "silver", "indigo", "olive"]


@dataclass(frozen=True)
class QAExample:
    context: str
    question: str
    answer: str
    kind: str

    def to_dict(self) -> dict:
        return asdict(self)


def _fact(rng: random.Random) -> tuple[str, str, str]:
    """(sentence to hide, question, answer)."""
    place = rng.choice(_PLACES)
    kind = rng.randrange(4)
    if kind == 0:
        code = str(rng.randint(10000, 99999))
        return f"The access code for the {place} is {code}.", f"What is the access code for the {place}?", code
    if kind == 1:
        name = rng.choice(_NAMES)
        return f"The keeper of the {place} is {name}.", f"Who is the keeper of the {place}?", name
    if kind == 2:
        year = str(rng.randint(1700, 2020))
        return f"The {place} was founded in {year}.", f"In which year was the {place} founded?", year
    colour = rng.choice(_COLOURS)
    return f"The door of the {place} is painted {colour}.", f"What colour is the door of the {place}?", colour


def _insert(text: str, sentence: str, depth: float) -> str:
    """Put a sentence between two sentences of `text`, at about `depth` (0..1) of its length."""
    cut = int(len(text) * depth)
    boundary = text.rfind(". ", 0, cut)
    cut = boundary + 2 if boundary != -1 else cut
    return f"{text[:cut]}{sentence} {text[cut:]}"


def fact_example(text: str, rng: random.Random, facts: int = 1, answerable: bool = True) -> QAExample:
    chosen, places = [], set()
    while len(chosen) < facts + (0 if answerable else 1):
        fact = _fact(rng)
        place = next(p for p in _PLACES if p in fact[0])
        if place not in places:
            places.add(place)
            chosen.append(fact)
    asked = chosen[0]
    hidden = chosen if answerable else chosen[1:]
    for sentence, _, _ in hidden:
        text = _insert(text, sentence, rng.uniform(0.05, 0.95))
    kind = "fact" if facts == 1 else "multi-fact"
    if not answerable:
        return QAExample(text, asked[1], NOT_IN_DOCUMENT, "not-in-document")
    return QAExample(text, asked[1], asked[2], kind)


def definition_example(synsets: Sequence[Synset], rng: random.Random, entries: int = 12) -> QAExample:
    page = rng.sample(list(synsets), entries)
    context = "\n".join(f"{s.word} ({s.pos}): {s.gloss}." for s in page)
    target = rng.choice(page)
    return QAExample(context, f"What does \"{target.word}\" mean here?", target.gloss, "definition")


def generate(texts: Sequence[str], synsets: Sequence[Synset], count: int, seed: int) -> list[QAExample]:
    """`count` examples, mixing the kinds; the same arguments always give the same examples."""
    rng = random.Random(seed)
    examples = []
    for _ in range(count):
        roll = rng.random()
        if roll < 0.2 and synsets:
            examples.append(definition_example(synsets, rng))
            continue
        text = rng.choice(texts)
        if roll < 0.55:
            examples.append(fact_example(text, rng))
        elif roll < 0.8:
            examples.append(fact_example(text, rng, facts=rng.randint(2, 4)))
        else:
            examples.append(fact_example(text, rng, facts=rng.randint(1, 2), answerable=False))
    return examples
