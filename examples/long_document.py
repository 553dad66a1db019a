"""A long local document for the examples: a generated town chronicle with facts hidden in its middle."""

import random

_TOPICS = ["the harbour", "the old mill", "the library", "the orchard", "the railway", "the market square"]
_SENTENCES = [
    "In {year} the council repaired {topic} after a long winter.",
    "Visitors to {topic} often remarked on its quiet mornings.",
    "A survey in {year} counted {n} people working near {topic}.",
    "The records of {topic} were kept in a blue ledger until {year}.",
]
FACTS = {
    "Who keeps the lighthouse?": "The lighthouse is kept by Ines Okafor.",
    "What is the access code of the archive?": "The access code of the archive is 48213.",
}


def chronicle(sentences: int = 600, seed: int = 7) -> str:
    rng = random.Random(seed)
    lines = [rng.choice(_SENTENCES).format(year=rng.randint(1850, 1990), topic=rng.choice(_TOPICS),
                                           n=rng.randint(10, 900)) for _ in range(sentences)]
    for i, fact in enumerate(FACTS.values()):
        lines.insert((i + 1) * sentences // (len(FACTS) + 1), fact)
    return " ".join(lines)
