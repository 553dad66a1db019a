"""The question set of the LlamaIndex QA benchmark: its documents, its questions, and the check that every
question is what its kind says.

    python benchmarks/llamaindex_qa/question_set.py    # writes questions/generated.jsonl, then checks all rows

Documents:
- generated (`gen-NN`): about 3,000 tokens of licence prose that no real document here is (Debian's GPL-2,
  LGPL-2.1, GFDL-1.3, MPL-1.1 and Artistic texts), with nine facts planted at fixed depths: codes, keepers' names,
  opening dates, keepers' birthplaces, and three facts from `PARAPHRASES`. Values and places are drawn by a
  seeded generator (`rcc_model.data.qa`'s names and places), so every run rebuilds the same text.
- real (`SOURCES`): three licence texts (Debian `base-files`) and three man pages (Debian `gzip`, `grep`, `tar`,
  rendered to plain text by groff), none of them in the training data (Python docs and WordNet), with
  hand-written questions (`questions/real.jsonl`). Each file is checked against its sha256; a man page missing
  here (minimal images drop /usr/share/man) is fetched with `apt-get download`.

Rows (JSONL): `id`, `doc`, `kind` (`KINDS`), `question`, `answers` (groups of accepted spellings: a correct
answer contains one spelling of every group, `scoring.is_correct`; empty for "absent"), `source` ("generated",
"licence", "man page") and, for "absent" rows, `withheld`: strings the answer would need, which the document
must not contain.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import random
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scoring import contains, normalized

from rcc_model.data.qa import generated_name, open_place
from rcc_model.data.sources import fetch_debian

KINDS = ("exact", "paraphrased", "two_fact", "absent")
HERE = Path(__file__).resolve().parent / "questions"
LICENCES = Path("/usr/share/common-licenses")
GENERATED_DOCS, GENERATED_SEED, GENERATED_CHARS = 18, 43, 13_000
FAR_APART = 1_100  # characters between the two facts of a generated two-fact question: more than one window


@dataclass(frozen=True)
class Source:
    """A real document: a file of a Debian package (`version` the one its `sha256` was taken from), read as
    plain text or rendered from a man page."""

    path: str
    package: str
    version: str
    sha256: str
    man: bool = False


SOURCES = {
    "gpl-3": Source("/usr/share/common-licenses/GPL-3", "base-files", "12.4+deb12u11",
                    "3972dc9744f6499f0f9b2dbf76696f2ae7ad8af9b23dde66d6af86c9dfb36986"),
    "apache-2.0": Source("/usr/share/common-licenses/Apache-2.0", "base-files", "12.4+deb12u11",
                         "cfc7749b96f63bd31c3c42b5c471bf756814053e847c10f3eb003417bc523d30"),
    "mpl-2.0": Source("/usr/share/common-licenses/MPL-2.0", "base-files", "12.4+deb12u11",
                      "fab3dd6bdab226f1c08630b1dd917e11fcb4ec5e1e020e2c16f83a0a13863e85"),
    "man-gzip": Source("/usr/share/man/man1/gzip.1.gz", "gzip", "1.12-1",
                       "7c76a9c1e535e82ed11acd7eae69c2138598c3decfe8e1629387809c6ba42a97", man=True),
    "man-grep": Source("/usr/share/man/man1/grep.1.gz", "grep", "3.8-5",
                       "ac48e22348240a1b740a823ec2c1dc9b6ae6e977f678f1a8d00dfb4bc6f90800", man=True),
    "man-tar": Source("/usr/share/man/man1/tar.1.gz", "tar", "1.34+dfsg-1.2+deb12u1",
                       "8fece2801dbfef3cb3235e94e592bd0b5e1e2e059efec4f9916fc0e41f64fe14", man=True),
}
FILLER = ("GPL-2", "LGPL-2.1", "GFDL-1.3", "MPL-1.1", "Artistic")

# (fact, a question in other words, the kind of value): the question shares no rare word with the fact
PARAPHRASES = (
    ("{value} founded the rowing club of the town.", "Who established the boating society?", "name"),
    ("Annual dues for members of the guild are {value} dollars.",
     "How much does it cost per year to belong to the association?", "number"),
    ("Dr. {value} treats patients at the clinic on weekdays.", "Which physician sees the sick?", "name"),
    ("The bridge was rebuilt in {value} after the great flood.", "What was the crossing remade from after the deluge?",
     "material"),
    ("A ferry crosses to {value} Island twice a day.", "To which isle does the boat sail?", "word"),
    ("The museum's oldest object is a bronze bell cast in {value}.",
     "When was the most ancient item in the gallery made?", "year"),
    ("Tickets for the summer fair cost {value} pounds.", "What is the price of entry to the July festival?", "number"),
    ("{value} was elected mayor by nine votes.", "Who won the race for the top office in town?", "name"),
    ("The library lends telescopes to children every {value}.", "On which day can kids borrow stargazing equipment?",
     "weekday"),
    ("The lighthouse lamp is visible from {value} miles out at sea.", "How far away can sailors spot the beacon?",
     "number"),
    ("{value} painted the mural on the station wall.", "Which artist decorated the railway building?", "name"),
    ("The orchard produces mostly {value}.", "What crop do the fruit trees chiefly yield?", "fruit"),
    ("The old mill ground {value} until it closed.", "What cereal did the grinding works process?", "grain"),
    ("Pupils at the village school learn {value} from their first year.",
     "Which foreign tongue do the children study from the start?", "language"),
    ("The harbour master's boat is called the {value}.", "What is the name of the vessel used by the port's chief?",
     "word"),
    ("The parish bell ringers practise in the {value} tower.", "In which steeple do the campanologists rehearse?",
     "colour"),
)
_VALUES = {"material": ["steel", "oak", "granite", "brick", "concrete", "cast iron"],
           "weekday": ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"],
           "fruit": ["pears", "plums", "cherries", "quinces", "apricots", "damsons"],
           "grain": ["barley", "rye", "oats", "wheat", "maize", "spelt"],
           "language": ["Welsh", "Italian", "Finnish", "Portuguese", "Greek", "Dutch"],
           "colour": ["red", "grey", "white", "black", "green", "yellow"]}
_CODE_NAMES = ("access code", "door code", "gate code", "alarm code", "locker code", "service code")
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December")


def _value(kind: str, rng: random.Random) -> str:
    if kind == "name":
        return generated_name(rng)
    if kind == "word":
        return generated_name(rng).split()[-1]
    if kind == "number":
        return str(rng.randint(12, 480))
    if kind == "year":
        return str(rng.randint(1420, 1790))
    return rng.choice(_VALUES[kind])


def _filler_sentences() -> list[str]:
    sentences = []
    for name in FILLER:
        text = " ".join((LICENCES / name).read_text(encoding="utf-8").split())
        sentences += [s for s in re.split(r"(?<=[.;])\s+", text) if 40 <= len(s) <= 400 and "*" not in s]
    return sentences


def generated(count: int = GENERATED_DOCS, seed: int = GENERATED_SEED) -> tuple[dict[str, str], list[dict]]:
    """`count` generated documents ({id: text}) and their questions, per document three exact, three
    paraphrased, three two-fact and four absent ones; the same for the same `seed`."""
    filler, docs, rows = _filler_sentences(), {}, []
    for number in range(count):
        rng, doc = random.Random(f"{seed}-{number}"), f"gen-{number:02d}"
        places: list[str] = []
        while len(places) < 6:  # distinct buildings: "the archive" and "the north archive" would read as one
            place = open_place(rng)
            if place.split()[-1] not in {p.split()[-1] for p in places}:
                places.append(place)
        p1, p2, p3, p4, p5, p6 = (f"the {p}" for p in places)
        code1, code4, withheld_code = (str(rng.randint(10**4, 10**7 - 1)) for _ in range(3))
        name2, name5, town = generated_name(rng), generated_name(rng), _value("word", rng)
        day, month, year = rng.randint(1, 28), rng.choice(_MONTHS), rng.randint(1852, 1996)
        date = [f"{day} {month} {year}", f"{month} {day}, {year}"]
        code_name, code_name4 = rng.sample(_CODE_NAMES, 2)
        chosen = rng.sample(range(len(PARAPHRASES)), 4)  # three planted, the fourth asked but absent
        unsaid = max(PARAPHRASES[chosen[3]][0].split("{value}"), key=len).strip(" .")  # its fact, less the value
        said = [(PARAPHRASES[i][0].format(value=v), PARAPHRASES[i][1], v)
                for i, v in ((i, _value(PARAPHRASES[i][2], rng)) for i in chosen[:3])]
        facts = [f"The keeper of {p2} is {name2}.", f"The {code_name4} of {p4} is {code4}.",
                 f"The {code_name} of {p1} is {code1}.", said[0][0], f"The keeper of {p5} is {name5}.",
                 f"{name2} was born in {town}.", said[1][0], f"{p3[0].upper()}{p3[1:]} opened on {date[0]}.",
                 said[2][0]]
        start = rng.randrange(len(filler))
        lines: list[str] = []
        while sum(map(len, lines)) < GENERATED_CHARS:
            lines.append(filler[(start + len(lines)) % len(filler)])
        for i, fact in enumerate(facts):
            lines.insert((i + 1) * len(lines) // (len(facts) + 1) + i, fact)
        docs[doc] = " ".join(lines)
        asked = [
            ("exact", f"What is the {code_name} of {p1}?", [[code1]], []),
            ("exact", f"Who is the keeper of {p2}?", [[name2]], []),
            ("exact", f"On what date did {p3} open?", [date], []),
            *(("paraphrased", question, [[value]], []) for _, question, value in said),
            ("two_fact", f"In which town was the keeper of {p2} born?", [[town]], []),
            ("two_fact", f"What is the {code_name4} of {p4}, and who is the keeper of {p5}?", [[code4], [name5]], []),
            ("two_fact", f"What is the {code_name} of {p1}, and on what date did {p3} open?", [[code1], date], []),
            ("absent", f"What is the {code_name} of {p2}?", [], [withheld_code, f"{code_name} of {p2}"]),
            ("absent", f"Who is the keeper of {p6}?", [], [p6]),
            ("absent", f"On what date did {p1} open?", [], [f"{p1} opened"]),
            ("absent", PARAPHRASES[chosen[3]][1], [], [unsaid]),
        ]
        for i, (kind, question, answers, withheld) in enumerate(asked):
            rows.append({"id": f"{doc}-{i}", "doc": doc, "kind": kind, "question": question, "answers": answers,
                         "source": "generated", **({"withheld": withheld} if withheld else {})})
    return docs, rows


def render_man(raw: bytes) -> str:
    """A man page as plain text: groff without hyphenation, on long lines, runs of spaces made one."""
    done = subprocess.run(["groff", "-man", "-Tutf8", "-rHY=0", "-rLL=250n", "-P-cbou"], input=raw,
                          capture_output=True, check=True)
    lines = (" ".join(line.split()) for line in done.stdout.decode("utf-8").splitlines())
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def real_text(doc: str, cache: Path) -> str:
    """The text of real document `doc`: its file from this machine, else from its Debian package (unpacked
    under `cache`), checked against the sha256 the questions were written on."""
    source = SOURCES[doc]
    path = Path(source.path)
    if not path.is_file():
        path = fetch_debian(source.package, cache) / source.path.lstrip("/")
    raw = path.read_bytes()
    if source.sha256 and hashlib.sha256(raw).hexdigest() != source.sha256:
        raise ValueError(f"{path} is not the file the questions were written on ({source.package} "
                         f"{source.version}, sha256 {source.sha256}): install that version")
    return render_man(gzip.decompress(raw)) if source.man else raw.decode("utf-8")


def read_rows(name: str) -> list[dict]:
    return [json.loads(line) for line in (HERE / name).read_text().splitlines() if line.strip()]


def load(cache: Path) -> tuple[dict[str, str], list[dict]]:
    """Every document ({id: text}: the generated ones rebuilt, the real ones read) and every question
    (`questions/generated.jsonl`, then `questions/real.jsonl`)."""
    docs, _ = generated()
    rows = read_rows("generated.jsonl") + read_rows("real.jsonl")
    for doc in dict.fromkeys(row["doc"] for row in rows if row["doc"] not in docs):
        docs[doc] = real_text(doc, cache)
    return docs, rows


def problems(docs: dict[str, str], rows: list[dict]) -> list[str]:
    """What is wrong with the question set: an accepted spelling of an answerable question that its document
    does not contain, a `withheld` string that an absent question's document does, a generated two-fact
    question whose facts share a window, a spelling that normalises to nothing, a duplicate id or an unknown
    kind."""
    found, ids = [], set()
    for row in rows:
        text, where = docs[row["doc"]], f"{row['id']} ({row['question']})"
        if row["id"] in ids or row["kind"] not in KINDS:
            found.append(f"{where}: duplicate id or unknown kind {row['kind']!r}")
        ids.add(row["id"])
        spellings = [*row.get("withheld", []), *(s for group in row["answers"] for s in group)]
        found += [f"{where}: {s!r} is empty once normalised" for s in spellings if not normalized(s)]
        if row["kind"] == "absent":
            found += [f"{where}: the document contains {w!r}" for w in row.get("withheld", []) if contains(text, w)]
            if row["answers"]:
                found.append(f"{where}: an absent question with answers")
            continue
        if len(row["answers"]) not in ((1, 2) if row["kind"] == "two_fact" else (1,)):  # 1: a bridging question
            found.append(f"{where}: {len(row['answers'])} answer groups for a {row['kind']} question")
        found += [f"{where}: no spelling of {group} in the document" for group in row["answers"]
                  if not any(contains(text, spelling) for spelling in group)]
        if row["kind"] == "two_fact" and row["source"] == "generated":
            found += _near(text, row, where)
    return found


def _near(text: str, row: dict, where: str) -> list[str]:
    """A generated two-fact question's facts closer than `FAR_APART` characters (its sentences located by the
    first spelling of each answer, or, for a birthplace, by the keeper's sentence it bridges from)."""
    spots = [text.find(group[0]) for group in row["answers"]]
    if len(spots) == 1:  # "In which town was the keeper of X born?": the keeper's sentence and the birthplace's
        place = row["question"].removeprefix("In which town was the keeper of ").removesuffix(" born?")
        spots.append(text.find(f"The keeper of {place} is"))
    return [] if abs(spots[0] - spots[1]) >= FAR_APART else [f"{where}: its facts are {abs(spots[0] - spots[1])} "
                                                              f"characters apart"]


def main() -> None:
    docs, rows = generated()
    (HERE / "generated.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    docs, rows = load(Path.home() / ".cache" / "rcc" / "llamaindex_qa")
    for problem in problems(docs, rows):
        print(problem)
    counts = {(row["source"], row["kind"]): 0 for row in rows}
    for row in rows:
        counts[row["source"], row["kind"]] += 1
    print(json.dumps({f"{source} / {kind}": n for (source, kind), n in sorted(counts.items())}, indent=1))


if __name__ == "__main__":
    main()
