"""The long local document of the examples: a generated town chronicle with two facts hidden in it."""

from rcc_model import chronicle

FACTS = {
    "Who keeps the lighthouse?": "The lighthouse is kept by Ines Okafor.",
    "What is the access code of the archive?": "The access code of the archive is 48213.",
}


def chronicle_text() -> str:
    return chronicle(sentences=600, seed=7, facts=list(FACTS.values()))
