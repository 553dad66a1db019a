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
_ONSETS = ["b", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "z", "br", "st", "th"]
_VOWELS = ["a", "e", "i", "o", "u", "a", "e", "i", "o", "ai", "ou"]
_CODAS = ["", "", "", "", "n", "r", "s", "l", "k", "m"]

VALUES = ("fixed", "open")
# "fixed" draws keepers' names from `_NAMES` (what the shipped weights trained on): a model learns to answer with
# one of ten names instead of reading the one in its memory. "open" generates a new name for every fact.


SUBJECTS = ("fixed", "open")
# "fixed" asks about ten places and names every code "the access code" (what the shipped weights trained on), and
# its unanswerable questions ask about a place the document never mentions: a model can learn to answer from the
# question's words, and abstain where a question names a code otherwise ("the secret code of the archive").
# "open" generates the place and names each code among many ("the gate PIN", "the badge number"), and half its
# unanswerable questions ask about a place the document does describe, for a kind of fact it does not give:
# whether the answer is there must be read from memory. It reads such codes better, at some cost on
# summary-like questions (the model card has the figures).
_PLACE_WORDS = ["north", "south", "east", "west", "old", "new", "central", "upper", "lower", "river", "harbour",
                "mountain", "city", "village", "forest", "market", "garden", "stone", "glass", "signal", "royal",
                "county", "island", "valley"]
_BUILDINGS = ["archive", "office", "laboratory", "station", "observatory", "depot", "lodge", "library", "tower",
              "workshop", "museum", "warehouse", "clinic", "school", "mill", "bakery", "hangar", "chapel", "garage",
              "studio", "boathouse", "greenhouse", "pavilion", "gallery", "bridge", "theatre", "dock", "farm"]
_CODE_NAMES = ["access code", "door code", "gate code", "vault code", "master code", "entry code", "service code",
               "night code", "alarm code", "locker code", "staff code", "visitor code", "delivery code", "reset code",
               "backup code", "door PIN", "alarm PIN", "staff PIN", "safe combination", "room number",
               "account number", "badge number", "serial number", "parcel reference", "phone extension",
               "licence number", "key number", "member number"]  # never "secret code": the needle's own
_CODE_TEMPLATES = (("The {code} of the {place} is {value}.", "What is the {code} of the {place}?"),
                   ("The {code} for the {place} is {value}.", "What is the {code} for the {place}?"),
                   ("At the {place}, the {code} is {value}.", "What is the {code} at the {place}?"))

PHRASINGS = ("fixed", "varied")
# (sentence, question) per fact kind: codes, keepers, years, colours. "fixed" uses the first of each (what
# the shipped weights trained on); "varied" draws among them, so that a model learns to read a question rather
# than to recognise four templates. The needle protocol's own phrasing ("the secret code of the archive")
# stays out, or the needle would measure recall of a template.
_TEMPLATES = (
    (("The access code for the {place} is {value}.", "What is the access code for the {place}?"),
     ("To enter the {place}, staff type {value} on the keypad.", "Which number opens the keypad of the {place}?"),
     ("The {place} is unlocked with the code {value}.", "What code unlocks the {place}?"),
     ("The alarm of the {place} is set with PIN {value}.", "What PIN sets the alarm of the {place}?"),
     ("Parcels for the {place} carry the reference {value}.", "Which reference do parcels for the {place} carry?"),
     ("The safe in the {place} opens with the combination {value}.",
      "What is the combination of the safe in the {place}?"),
     ("Extension {value} rings at the {place}.", "Which telephone extension rings at the {place}?")),
    (("The keeper of the {place} is {value}.", "Who is the keeper of the {place}?"),
     ("{value} looks after the {place}.", "Who looks after the {place}?"),
     ("The {place} is run by {value}.", "Who runs the {place}?"),
     ("Ask {value} for the keys to the {place}.", "Who holds the keys to the {place}?"),
     ("Since last spring {value} has managed the {place}.", "Who manages the {place}?")),
    (("The {place} was founded in {value}.", "In which year was the {place} founded?"),
     ("Work on the {place} began in {value}.", "When did work on the {place} begin?"),
     ("The {place} opened its doors in {value}.", "In what year did the {place} open?"),
     ("The {place} dates from {value}.", "What year does the {place} date from?")),
    (("The door of the {place} is painted {value}.", "What colour is the door of the {place}?"),
     ("The roof of the {place} is {value}.", "What colour is the roof of the {place}?"),
     ("The walls of the {place} are {value}.", "What colour are the walls of the {place}?"),
     ("The flag over the {place} is {value}.", "What colour is the flag over the {place}?")),
)

# Answer-format instructions a user appends to a question, per fact kind (as `_TEMPLATES`), and any kind: a
# model may abstain where a question pairs a subject it never saw with such an instruction ("Answer with the
# number."); training on instructions alone does not cure that. The protocol's own instruction stays out, as its
# phrasing does. Unanswerable questions carry them as often: no cue to answer.
_INSTRUCTIONS = (
    ("Give only the number.", "Reply with the digits alone.", "Just the code, please.",
     "Respond with the code and nothing else.", "Write the number only."),
    ("Give only the name.", "Reply with the full name.", "Just the name, please.", "Name the person only."),
    ("Give only the year.", "Reply with the year alone.", "Just the year, please.", "Write the year as digits."),
    ("Give only the colour.", "One word, please.", "Reply with the colour alone.", "Name the colour only."),
)
_ANY_INSTRUCTIONS = ("Answer briefly.", "Be concise.", "Keep it short.", "Use only the document.",
                     "Reply in as few words as possible.", "If the document does not say, say so.")


@dataclass(frozen=True)
class Wording:
    """How generated facts and questions are worded; the defaults are the set the shipped weights trained on.

    `phrasing` "varied" words each fact one of several ways (and codes have 4 to 7 digits); `values` "open" gives
    every keeper a generated name; `instructions` is the share of fact questions that end with an answer-format
    instruction ("Give only the number."); `subjects` "open" generates places and code names, and asks
    unanswerable questions about places the document describes; `codes` is the share of facts that are codes
    (None: a quarter, drawn as the sets built before it were): the needle asks for a code, and at r = 8 its
    misses are digits out of order; `like_facts` is the share of fact questions whose document also states the
    asked kind of fact, worded alike, about another subject ("the gate code of the river mill" beside "the gate
    code of the old depot"): a model that answers a question with whatever like value it reads learns to tell
    them apart, and to decline where only the other subject's is there."""

    phrasing: str = "fixed"
    values: str = "fixed"
    instructions: float = 0.0
    subjects: str = "fixed"
    codes: float | None = None
    like_facts: float = 0.0

    def __post_init__(self) -> None:
        if self.phrasing not in PHRASINGS:
            raise ValueError(f"`phrasing` must be one of {PHRASINGS}, got {self.phrasing!r}")
        if self.values not in VALUES:
            raise ValueError(f"`values` must be one of {VALUES}, got {self.values!r}")
        if not 0.0 <= self.instructions <= 1.0:
            raise ValueError(f"`instructions` is a share, between 0 and 1; got {self.instructions!r}")
        if self.subjects not in SUBJECTS:
            raise ValueError(f"`subjects` must be one of {SUBJECTS}, got {self.subjects!r}")
        if self.codes is not None and not 0.0 <= self.codes < 1.0:  # 1 would leave no other kind to ask instead
            raise ValueError(f"`codes` is a share of facts, at least 0 and below 1; got {self.codes!r}")
        if not 0.0 <= self.like_facts <= 1.0:
            raise ValueError(f"`like_facts` is a share, between 0 and 1; got {self.like_facts!r}")


SHIPPED_WORDING = Wording()
"""The wording of the set the shipped weights trained on."""


@dataclass(frozen=True)
class QAExample:
    context: str
    question: str
    answer: str
    kind: str

    def to_dict(self) -> dict:
        return asdict(self)


def generated_name(rng: random.Random) -> str:
    """A pronounceable first name and surname that no list holds ("Tiva Moruken")."""
    def word(syllables: int) -> str:
        return "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS)
                       for _ in range(syllables)).capitalize()
    return f"{word(2)} {word(rng.randint(2, 3))}"


@dataclass(frozen=True)
class _Fact:
    sentence: str  # to hide in the document
    question: str
    answer: str
    place: str
    kind: int  # 0 codes, 1 keepers, 2 years, 3 colours
    template: str  # the sentence with {place} and {value} left to fill: a like fact about another subject

    @property
    def subject(self) -> str:
        return _subject(self.place)


def _subject(place: str) -> str:
    """Facts in one document never share it, so that each question has one answer: the building, as "the
    archive" and "the north archive" would read as one."""
    return place.split()[-1]


def open_place(rng: random.Random) -> str:
    """A place no fixed list holds, sometimes a bare building ("valley bakery", "theatre")."""
    building = rng.choice(_BUILDINGS)
    return building if rng.random() < 0.2 else f"{rng.choice(_PLACE_WORDS)} {building}"


def _place(rng: random.Random, wording: Wording) -> str:
    return rng.choice(_PLACES) if wording.subjects == "fixed" else open_place(rng)


def _value(rng: random.Random, wording: Wording, kind: int) -> str:
    if kind == 0:
        digits = 5 if wording.phrasing == "fixed" else rng.randint(4, 7)
        return str(rng.randint(10 ** (digits - 1), 10**digits - 1))
    if kind == 1:
        return rng.choice(_NAMES) if wording.values == "fixed" else generated_name(rng)
    if kind == 2:
        return str(rng.randint(1700, 2020))
    return rng.choice(_COLOURS)


def _fact(rng: random.Random, wording: Wording, place: str | None = None) -> _Fact:
    """A fact about `place` (drawn when None), worded as `wording` says."""
    if place is None:
        place = _place(rng, wording)
    if wording.codes is None:
        kind = rng.randrange(4)
    elif rng.random() < wording.codes:
        kind = 0
    else:
        kind = rng.randrange(1, 4)
    value = _value(rng, wording, kind)
    if kind == 0 and wording.subjects == "open":
        code = rng.choice(_CODE_NAMES)
        sentence, question = (t.replace("{code}", code) for t in rng.choice(_CODE_TEMPLATES))
    else:
        sentence, question = _TEMPLATES[kind][0] if wording.phrasing == "fixed" else rng.choice(_TEMPLATES[kind])
    question = question.format(place=place)
    if wording.instructions and rng.random() < wording.instructions:  # no draw at 0: earlier sets stay as built
        question = f"{question} {rng.choice(_INSTRUCTIONS[kind] + _ANY_INSTRUCTIONS)}"
    return _Fact(sentence.format(place=place, value=value), question, value, place, kind, sentence)


def _like_fact(rng: random.Random, wording: Wording, fact: _Fact, taken: set[str]) -> _Fact:
    """`fact`'s kind, worded as it is, about a subject not in `taken`, with another value."""
    place = _place(rng, wording)
    while _subject(place) in taken:
        place = _place(rng, wording)
    value = _value(rng, wording, fact.kind)
    while value == fact.answer:
        value = _value(rng, wording, fact.kind)
    return _Fact(fact.template.format(place=place, value=value), "", value, place, fact.kind, fact.template)


def _insert(text: str, sentence: str, depth: float) -> str:
    """Put a sentence between two sentences of `text`, at about `depth` (0..1) of its length."""
    cut = int(len(text) * depth)
    boundary = text.rfind(". ", 0, cut)
    cut = boundary + 2 if boundary != -1 else cut
    return f"{text[:cut]}{sentence} {text[cut:]}"


def fact_example(text: str, rng: random.Random, facts: int = 1, answerable: bool = True,
                 wording: Wording = SHIPPED_WORDING) -> QAExample:
    # With open subjects half the unanswerable questions ask about a subject the document describes.
    described = not answerable and wording.subjects == "open" and rng.random() < 0.5
    chosen, seen = [], set()
    while len(chosen) < facts + (0 if answerable or described else 1):
        fact = _fact(rng, wording)
        if fact.subject not in seen:
            seen.add(fact.subject)
            chosen.append(fact)
    if described:
        told = asked = chosen[0]
        while asked.kind == told.kind:  # "the door PIN" where it gives "the door code" would be unfair
            asked = _fact(rng, wording, place=told.place)
        chosen.insert(0, asked)
    asked = chosen[0]
    hidden = chosen if answerable else chosen[1:]
    if wording.like_facts and rng.random() < wording.like_facts:  # no draw at 0: earlier sets stay as built
        hidden = [*hidden, _like_fact(rng, wording, asked, {fact.subject for fact in chosen})]
    for fact in hidden:
        text = _insert(text, fact.sentence, rng.uniform(0.05, 0.95))
    kind = "fact" if facts == 1 else "multi-fact"
    if not answerable:
        return QAExample(text, asked.question, NOT_IN_DOCUMENT, "not-in-document")
    return QAExample(text, asked.question, asked.answer, kind)


def definition_example(synsets: Sequence[Synset], rng: random.Random, entries: int = 12) -> QAExample:
    page = rng.sample(list(synsets), entries)
    context = "\n".join(f"{s.word} ({s.pos}): {s.gloss}." for s in page)
    target = rng.choice(page)
    return QAExample(context, f"What does \"{target.word}\" mean here?", target.gloss, "definition")


def generate(texts: Sequence[str], synsets: Sequence[Synset], count: int, seed: int,
             wording: Wording = SHIPPED_WORDING) -> list[QAExample]:
    """`count` examples, mixing the kinds, the facts worded as `wording` says; the same arguments always give
    the same examples."""
    rng = random.Random(seed)
    examples = []
    for _ in range(count):
        roll = rng.random()
        if roll < 0.2 and synsets:
            examples.append(definition_example(synsets, rng))
            continue
        text = rng.choice(texts)
        if roll < 0.55:
            examples.append(fact_example(text, rng, wording=wording))
        elif roll < 0.8:
            examples.append(fact_example(text, rng, facts=rng.randint(2, 4), wording=wording))
        else:
            examples.append(fact_example(text, rng, facts=rng.randint(1, 2), answerable=False,
                                         wording=wording))
    return examples
