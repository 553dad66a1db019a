"""Synthetic long documents with facts hidden in them, for the demo, the examples and the benchmarks."""

from __future__ import annotations

import random
from collections.abc import Sequence

_TOPICS = ["the harbour", "the old mill", "the library", "the orchard", "the railway", "the market square"]
_SENTENCES = [
    "In {year} the council repaired {topic} after a long winter.",
    "Visitors to {topic} often remarked on its quiet mornings.",
    "A survey in {year} counted {n} people working near {topic}.",
    "The records of {topic} were kept in a blue ledger until {year}.",
]


def chronicle(sentences: int = 120, seed: int = 0, facts: Sequence[str] = ()) -> str:
    """A town chronicle of `sentences` generated sentences with `facts` spread evenly through it."""
    rng = random.Random(seed)
    lines = [rng.choice(_SENTENCES).format(year=rng.randint(1850, 1990), topic=rng.choice(_TOPICS),
                                           n=rng.randint(10, 900)) for _ in range(sentences)]
    for i, fact in enumerate(facts):
        lines.insert((i + 1) * sentences // (len(facts) + 1) + i, fact)
    return " ".join(lines)


def passkey_fact(passkey: int | str) -> str:
    """The pass key as the passkey test states it, twice."""
    return f"The pass key is {passkey}. Remember it. {passkey} is the pass key."


def passkey_document(passkey: int, sentences: int = 120, seed: int = 0) -> tuple[str, str]:
    """A chronicle with a pass key in its middle; returns (document, question)."""
    return chronicle(sentences, seed, [passkey_fact(passkey)]), "What is the pass key?"


def access_codes(count: int, seed: int) -> list[tuple[str, str, str]]:
    """(sentence, question, answer) for `count` access codes of different places, codes nobody could guess."""
    rng = random.Random(seed)
    places = ["the north tower", "the salt store", "the signal box", "the seed bank", "the clock house"]
    if count > len(places):
        raise ValueError(f"at most {len(places)} access codes, got {count}")
    out = []
    for place in places[:count]:
        code = str(rng.randint(10000, 99999))
        out.append((f"The access code of {place} is {code}.", f"What is the access code of {place}?", code))
    return out


LONG_DOCUMENT_SENTENCES = 1333  # about 22K tokens: 2.7 times the 8,192 positions of the SmolLM2 decoder


def codes_in_one_document(draw: int) -> tuple[str, list[tuple[str, str]]]:
    """Draw `draw` of the one-long-document scenario (the LangChain quality test is draw 1): three access codes
    at 25, 50 and 75 % depth of a 22K-token chronicle; returns (document, [(question, code)])."""
    planted = access_codes(3, seed=draw)
    document = chronicle(LONG_DOCUMENT_SENTENCES, seed=draw + 2, facts=[fact for fact, _, _ in planted])
    return document, [(question, code) for _, question, code in planted]


def codes_in_three_documents(draw: int) -> list[tuple[str, str, str]]:
    """Draw `draw` of the several-long-documents scenario (the LlamaIndex quality test is draw 2): one access
    code in each of three 22K-token chronicles; returns [(document, question, code)]."""
    return [(chronicle(LONG_DOCUMENT_SENTENCES, seed=10 * (draw - 1) + i, facts=[fact]), question, code)
            for i, (fact, question, code) in enumerate(access_codes(3, seed=draw))]
