"""Compress, select, expand on the packaged default: how many tokens of the best windows to read as text.

    python benchmarks/expanded_reading/expanded_reading.py --out benchmarks/expanded_reading

Two sources, each question answered once per setting EXPAND:SLOTS (`expand_tokens`, `read_slots`; the slot
alignments the model's own `read_alignments`), all through `RCCModel.ask` (the reading `rcc ask` and the
integrations share; a reading of no slots is the base decoder reading text, its adapters off):
- generated chronicles (`rcc_model.samples`, about 2.5K tokens each) with three facts each, two access codes
  asked for in their own words and one keeper's name asked for in other words;
- the GPL-3 text from the system's common licences (about 7.7K tokens), five questions with known answers.
A question counts as answered when the output contains the expected answer (case-insensitive).
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

from rcc_model import RCCModel, ReadingPolicy
from rcc_model.samples import access_codes, chronicle

GPL = Path("/usr/share/common-licenses/GPL-3")
GPL_QUESTIONS = [  # (question, expected answer): facts of the text, the five
    ("What is the date of version 3 of the GNU General Public License?", "29 June 2007"),
    ("Who holds the copyright of the GNU General Public License?", "Free Software Foundation"),
    ("For how long must a written offer to provide the Corresponding Source remain valid?", "three years"),
    ("Within how many days must a violation be cured after notice for the license to be reinstated?", "30 days"),
    ("Which other license does section 13 let you combine covered work with?", "Affero"),
]
NAMES = ["Ines Okafor", "Tomas Berg", "Lena Marsh", "Oskar Vidal", "Mira Sato", "Jonas Reyes"]
PLACES = ["the lighthouse", "the grain barn", "the ferry pier", "the weather station", "the print shop", "the dam"]


def chronicle_cases(documents: int, seed: int) -> list[tuple[str, str, str, str]]:
    """(document, question, answer, kind) for `documents` chronicles with two codes and one keeper each."""
    cases = []
    for d in range(documents):
        rng = random.Random(seed + d)
        codes = access_codes(2, seed=seed + d)
        name, place = NAMES[d % len(NAMES)], PLACES[rng.randrange(len(PLACES))]
        keeper = f"The keeper of {place} is {name}, who took the post after the flood."
        document = chronicle(120, seed=seed + d, facts=[codes[0][0], keeper, codes[1][0]])
        cases += [(document, q, a, "code") for _, q, a in codes]
        cases.append((document, f"Who looks after {place} these days?", name, "name (paraphrased)"))
    return cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", nargs="+", default=["0:64", "512:0", "256:64", "512:64"],
                        help="EXPAND:SLOTS pairs (default: %(default)s)")
    parser.add_argument("--documents", type=int, default=4)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--model", default="default", help="packaged name or checkpoint folder (default: %(default)s)")
    args = parser.parse_args()
    model = RCCModel.from_pretrained(args.model)
    cases = chronicle_cases(args.documents, args.seed)
    if GPL.is_file():
        cases += [(GPL.read_text(), q, a, "GPL-3") for q, a in GPL_QUESTIONS]
    memories: dict[str, object] = {}
    rows = []
    for document, question, answer, kind in cases:
        if document not in memories:
            memories[document] = model.compress(document)
        for setting in args.settings:
            expand, slots = map(int, setting.split(":"))
            start = time.perf_counter()
            output = model.ask(memories[document], question, max_new_tokens=24,
                               reading=ReadingPolicy(expand_tokens=expand, read_slots=slots))
            rows.append({"kind": kind, "setting": setting, "question": question, "answer": answer,
                         "output": output, "correct": answer.lower() in output.lower(),
                         "seconds": round(time.perf_counter() - start, 2)})
            print(json.dumps(rows[-1]), flush=True)
    summary = {}
    for setting in args.settings:
        for kind in [*sorted({r["kind"] for r in rows}), "all"]:
            chosen = [r for r in rows if r["setting"] == setting and kind in (r["kind"], "all")]
            summary[f"{setting}/{kind}"] = {"correct": sum(r["correct"] for r in chosen), "of": len(chosen),
                                           "seconds": round(sum(r["seconds"] for r in chosen) / len(chosen), 2)}
    print(json.dumps(summary, indent=1))
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "expanded_reading.json").write_text(json.dumps({"summary": summary, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
