"""What the LangChain and LlamaIndex classes share: one loaded model per name, a lock around generation, a
memory cache by content, and async offload of the synchronous core.

Integrations depend on `rcc_model`'s public API only; `rcc_model` never imports this package.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import threading
import time
import uuid
import warnings
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from rcc_integrations._conversation import DecoderInput, answering_from_result, with_tools
from rcc_model import (
    CompressedMemory,
    GenerationInfo,
    MemoryFileError,
    MemoryMismatchError,
    MemoryViews,
    MemoryWithText,
    RCCModel,
    Reading,
    SamplingParams,
    aligned_views,
    answer_in_parts,
    generate_tool_call,
    prefers_tool_call,
    question_parts,
    rate_folders,
    read_within,
    resolve_checkpoint,
    text_only,
    with_context,
    with_question,
)

Embed = Callable[[Sequence[str]], Sequence[Sequence[float]]]  # texts -> vectors: what rcc_model ranks with

QUESTION_RESERVE = 128  # decoder positions kept free for the question (the answer's are added)
READ_ALIGNMENTS_HELP = ("slot alignments at which the windows an answer reads are decoded together "
                        "(rcc_model.aligned_views): more of them copy codes more exactly, each costs one more "
                        "decoder row and one more encoder pass over the text read. None = the model's read_alignments "
                        "(4 for the packaged default; 1 answers soonest)")

SPLIT_QUESTIONS_HELP = ("answer a question about memory that asks several things (\"What is X, and who is Y?\") "
                        "part by part, each part reading the windows that best match it, the answers one per line "
                        "(rcc_model.question_parts); False asks it whole")

TOOL_CALL_MARGIN_HELP = ('with tools bound and the choice left to the model, call a tool on a user turn when "{" '
                         "scores within this many nats of the decoder's favourite token; after a tool result, "
                         "answer in text. The default, float('inf'), calls on every user turn: the agent loop "
                         "(call, then answer from the result) that a small model runs dependably; a finite margin "
                         "(e.g. 2.0) lets it answer some user turns in text, and the packaged model then skips "
                         "calls it needed")


@dataclass(frozen=True)
class ToolCall:
    """A tool call written by schema-constrained decoding: its arguments match the tool's schema."""

    name: str
    arguments: Any
    id: str


@dataclass
class Part:
    """One question the decoder answers with a reading of its own: the question asked, or one part of a question
    that asks several things (`rcc_model.question_parts`), which the decoder answers one at a time."""

    question: str
    conversation: DecoderInput  # asking `question`; its turn holds the windows read as text
    reading: Reading
    memory: CompressedMemory | MemoryViews  # what the decoder reads: the reading's memory at its alignments


def reading_metadata(parts: Sequence[Part]) -> dict[str, Any]:
    """What an answer read, as response metadata: the memory slots (one alignment's), alignments, tokens and
    windows read, of how many held, and which (`Reading.metadata`). For a question answered part by part the
    decoder's costs are summed over its parts, each window read is listed with its `part` (an index into
    `question_parts`, the questions answered)."""
    first = parts[0]
    metadata = {"memory_slots": sum(p.memory.num_slots for p in parts), "memory_alignments": first.memory.alignments,
                "memory_tokens": sum(p.memory.token_count for p in parts),
                "memory_windows_read": sum(p.reading.windows_read for p in parts),
                "memory_windows": first.reading.windows_held, "reading": first.reading.metadata()}
    if len(parts) > 1:
        readings = [p.reading.metadata() for p in parts]
        metadata["reading"] = {
            "ranking": readings[0]["ranking"],
            "windows": [{**w, "part": k} for k, r in enumerate(readings) for w in r["windows"]],
            "expanded_tokens": sum(r["expanded_tokens"] for r in readings),
            "compressed_slots": sum(r["compressed_slots"] for r in readings)}
        metadata["question_parts"] = [p.question for p in parts]
    return metadata


class ModelLock:
    """A reentrant lock that knows whether another thread is waiting for it (`contended`): a stream whose
    reader has gone idle gives the model up to such a waiter (`iterate_in_thread`)."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._waiting = 0
        self._count = threading.Lock()

    @property
    def contended(self) -> bool:
        return self._waiting > 0

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        if self._lock.acquire(blocking=False):
            return True
        with self._count:
            self._waiting += 1
        try:
            return self._lock.acquire(blocking, timeout)
        finally:
            with self._count:
                self._waiting -= 1

    def release(self) -> None:
        self._lock.release()

    def __enter__(self) -> ModelLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class StreamStopped(RuntimeError):
    """An async stream was stopped because its reader left it unread while another call waited for the model."""


_ENGINES: dict[str, Engine] = {}
_ENGINES_LOCK = threading.Lock()


class Engine:
    """An `RCCModel` shared by every integration object that names it.

    Generation holds `lock` (one model, one decoding at a time, so concurrent calls never interleave);
    compressed memory is cached by (model fingerprint, rate, text hash), so a document reused across calls is
    compressed once. `compressions` counts the texts actually compressed.
    """

    def __init__(self, model: RCCModel, cache_size: int = 64):
        self.model = model
        self.lock = ModelLock()
        self.cache_size = cache_size
        self._cache: OrderedDict[tuple[str, int, str], CompressedMemory] = OrderedDict()
        self.compressions = 0

    @property
    def tokenizer(self):
        return self.model.tokenizer

    def count_tokens(self, text: str) -> int:
        return len(self.model.encode_text(text)) if text else 0

    def memory_for(self, text: str, store: Any = None, rate: int | None = None) -> tuple[CompressedMemory, bool]:
        """(memory of `text` at `rate`, whether it came from a cache): the in-process cache, then `store` (any
        LangChain-style `ByteStore`: `mget`/`mset` of bytes, e.g. a `LocalFileStore` that outlives the
        process), then compression, whose result goes into both. A damaged or foreign store entry is
        recompressed and overwritten."""
        if not text.strip():
            raise ValueError("cannot compress an empty document")
        rate = self.model.config.check_rate(rate)
        key = (self.model.fingerprint, rate, hashlib.sha256(text.encode()).hexdigest())
        store_key = "rcc-memory/{}/r{}/{}".format(*key)  # a multi-rate model keeps one memory per rate
        with self.lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key], True
            memory = self._from_store(store, store_key)
            cached = memory is not None
            if memory is None:
                memory = self.model.compress(text, rate=rate)
                self.compressions += 1
                if store is not None:
                    store.mset([(store_key, memory.to_bytes())])
            self._cache[key] = memory
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
            return memory, cached

    def _from_store(self, store: Any, key: str) -> CompressedMemory | None:
        data = store.mget([key])[0] if store is not None else None
        if data is None:
            return None
        try:
            memory = CompressedMemory.from_bytes(data, device=self.model.device)
            self.model.check_memory(memory)
        except (MemoryFileError, MemoryMismatchError) as error:
            warnings.warn(f"memory store entry {key} is unusable ({error}); compressing again", stacklevel=3)
            return None
        return memory

    def read_budget(self, answer_tokens: int, memory_budget: int | None = None) -> int:
        """The most memory slots one answer reads: `memory_budget`, else what the model was measured to read
        well (`RCCConfig.read_slots`), never more than the decoder's positions leave after question and
        answer."""
        positions = self.model.max_positions
        free = positions - min(QUESTION_RESERVE + answer_tokens, positions // 2)
        return min(memory_budget or self.model.config.read_slots or free, free)

    def prompt_room(self, answer_tokens: int, budget: int, expand_tokens: int | None = None, system: str = ""
                    ) -> int:
        """Prompt tokens that fit in the decoder beside `budget` memory slots, the answer, the memory read as
        text (`expand_budget`) and a `system` text added to the chat later (a tool description)."""
        return (self.model.max_positions - budget - answer_tokens - self.expand_budget(expand_tokens)
                - self.count_tokens(system))

    def resolve(self, pieces: list[str | CompressedMemory | MemoryWithText], store: Any = None,
                rate: int | None = None, question: str | None = None, budget: int | None = None,
                keep_last: bool = False, alignments: int | None = None, expand_tokens: int = 0,
                embed: Embed | None = None) -> tuple[Reading, int, int]:
        """What to read of all pieces, in order (texts compressed at `rate` or taken from a cache), with how
        many tokens were read from existing memory and how many were compressed now. The windows of texts most
        relevant to `question` are read as text within `expand_tokens`, and as slots within `budget`
        (`rcc_model.read_within`, ranked with `embed` too where given); memories given without their text,
        and the last piece with `keep_last`, are read whole. The reading keeps the text of what it reads when
        `views` will realign it at `alignments`."""
        memories, read, created = [], 0, 0
        for piece in pieces:
            if isinstance(piece, str):
                memory, cached = self.memory_for(piece, store, rate)
            else:
                memory, cached = piece.memory if isinstance(piece, MemoryWithText) else piece, True
                self.model.check_memory(memory)
            memories.append(memory)
            if cached:
                read += memory.token_count
            else:
                created += memory.token_count
        if not memories:
            return Reading(self.model.empty_memory(), [], [], []), read, created
        budget = budget or 2**62
        total = sum(m.num_slots for m in memories)
        over = total > budget  # only then are windows ranked
        realign = not over and self.realigns(total, alignments)  # then `views` needs the texts too
        by_text = ((over or expand_tokens > 0) and bool(question)) or realign  # ranked, or realigned, by text
        texts = [self._window_texts(p) if by_text and not (keep_last and i == len(pieces) - 1) else None
                 for i, p in enumerate(pieces)]
        return read_within(question or "", memories, texts, budget, expand_tokens=expand_tokens if question else 0,
                           embed=embed), read, created

    def _window_texts(self, piece: str | CompressedMemory | MemoryWithText) -> list[str] | None:
        """The text of each window of a piece: split from a text, given with a `MemoryWithText` or kept in the
        memory (`compress(..., keep_text=True)`), else unknown."""
        if isinstance(piece, str):
            return self.model.window_texts(piece)
        return piece.texts if isinstance(piece, MemoryWithText) else piece.window_texts

    def realigns(self, slots: int, alignments: int | None = None) -> bool:
        """Whether `views` reads a memory of `slots` slots at more than one alignment (`alignments`, default
        the model's `read_alignments`): only within what the model reads well (`read_slots`), so the extra
        encoding stays one short pass."""
        config = self.model.config
        alignments = config.read_alignments if alignments is None else alignments
        return alignments > 1 and 0 < slots <= (config.read_slots or slots)

    def views(self, memory: CompressedMemory, texts: Sequence[str] | None, alignments: int | None = None
              ) -> CompressedMemory | MemoryViews:
        """What an answer reads: `memory`, at `alignments` slot alignments (default the model's
        `read_alignments`; `rcc_model.aligned_views`) when the text of all of it is at hand and `realigns`
        says so."""
        if not texts or not self.realigns(memory.num_slots, alignments):
            return memory
        with self.lock:
            return aligned_views(self.model, memory, texts, alignments)

    def prepare(self, conversation: DecoderInput, store: Any = None, rate: int | None = None,
                budget: int | None = None, alignments: int | None = None, expand_tokens: int | None = None,
                embed: Embed | None = None) -> tuple[Reading, int, int]:
        """`resolve` the conversation's memory for its question (the last user turn), whose turn then holds the
        text of the windows read expanded (`expand_tokens`, default the model's: `expand_budget`); in
        instruction-reconstruction mode the compressed question comes last and is always read, and nothing is
        expanded."""
        pieces, question = conversation.pieces, conversation.question
        if question is not None:
            pieces = [*pieces, "\n\n" + question]
        result = self.resolve(pieces, store, rate, question or conversation.last_user_text(), budget,
                              keep_last=question is not None, alignments=alignments,
                              expand_tokens=0 if question is not None else self.expand_budget(expand_tokens),
                              embed=embed)
        conversation.chat = result[0].prompt(conversation.chat)
        return result

    def read(self, conversation: DecoderInput, store: Any = None, rate: int | None = None, budget: int | None = None,
             alignments: int | None = None, expand_tokens: int | None = None, embed: Embed | None = None,
             split: bool = True) -> tuple[list[Part], int, int]:
        """What the decoder reads for the conversation's question (`prepare`, then `views`), once per part of a
        question that asks several things where `split` (`rcc_model.question_parts`; a question about attached
        memory, in plain text), with how many memory tokens were read from existing memory and how many were
        compressed now (the memory given, counted once)."""
        question = conversation.last_user_text()
        asked = question_parts(question) if split and conversation.pieces and conversation.question is None \
            and conversation.chat and conversation.chat[-1]["role"] == "user" else [question]
        conversations = [conversation] if len(asked) == 1 else [
            DecoderInput(list(conversation.pieces), with_question(conversation.chat, q)) for q in asked]
        parts, counts = [], []
        for q, part in zip(asked, conversations):
            reading, read, created = self.prepare(part, store, rate, budget, alignments, expand_tokens, embed)
            counts.append((read, created))
            parts.append(Part(q, part, reading, self.views(reading.memory, reading.texts, alignments)))
        return parts, *counts[0]

    def chat_tokens(self, parts: Sequence[Part]) -> int:
        """Tokens of the plain-text chats the parts were answered from, less the memory they hold as text
        (`Reading.context`: counted with the memory given, not twice)."""
        return sum(sum(self.count_tokens(m["content"]) for m in p.conversation.chat)
                   - self.count_tokens(p.reading.context) for p in parts)

    def expand_budget(self, expand_tokens: int | None = None) -> int:
        """The most tokens of memory an answer reads as text: `expand_tokens`, else the model's own
        (`RCCConfig.expand_tokens`), never more than half the decoder's positions."""
        chosen = self.model.config.expand_tokens if expand_tokens is None else expand_tokens
        return max(0, min(chosen, self.model.max_positions // 2))

    def answer(self, memory: CompressedMemory | MemoryViews, conversation: DecoderInput, info: GenerationInfo,
               **sampling) -> Iterator[str]:
        """Text pieces of the answer: streamed over the chat, or, in instruction-reconstruction mode, the
        answer after the decoder has recalled the question from memory (one piece)."""
        if conversation.question is None:
            yield from self.stream(memory, conversation.chat, info=info, **sampling)
            return
        max_new_tokens = sampling.pop("max_new_tokens")
        with self.lock:
            text = self.model.ask(memory, None, max_new_tokens=max_new_tokens, **sampling)
        info.output_tokens, info.finish_reason = self.count_tokens(text), "stop"
        if text:
            yield text

    def answer_parts(self, parts: Sequence[Part], info: GenerationInfo, **sampling) -> Iterator[str]:
        """`answer` to each part, the answers joined by `rcc_model.PART_SEPARATOR`; `info` holds their sums (and
        each part's, `GenerationInfo.parts`)."""
        yield from answer_in_parts(parts, lambda part, part_info: self.answer(
            part.memory, part.conversation, part_info, **sampling), info)

    def tool_call_or_text(self, memory: CompressedMemory | MemoryViews, chat: list[dict], tools: list[dict],
                          choice: str | None, after_tool_result: bool, margin: float, info: GenerationInfo,
                          sampling: dict[str, Any]) -> Iterator[str | ToolCall]:
        """One turn of a conversation with `tools` bound: one `ToolCall`, written by schema-constrained decoding,
        or streamed text. `choice`: None (the model decides: a call on a user turn when "{" scores within
        `margin` nats of its favourite token, reading the tools described in its system message: `with_tools`;
        text after a tool result), "any" (must call), or a tool name (must call that one).

        Each step goes to the decoder that does it dependably on the packaged model. A call: the decoder that
        reads memory first answers the user's turn from it (`recall`: e.g. the code a calculation needs), then
        the base decoder (no memory, adapters off, its own tool-use skill) writes the call with that answer
        before the question; the memory-reading decoder, trained to answer from memory, writes arguments that
        ignore it. The recollection stays out of the message: shown in the next turn, the base decoder computed
        its own answer from it instead of reading the tool's result. An answer after a tool result: the base
        decoder reads the conversation told to answer from the result (`answering_from_result`), since the
        memory-reading decoder answers from memory instead."""
        schemas = {t["function"]["name"]: t["function"].get("parameters", {"type": "object"}) for t in tools}
        tokenizer = self.model.tokenizer
        with self.lock:
            state = None
            if choice is None and after_tool_result:
                state = self.model.prefill_prompt(self.model.empty_memory(), answering_from_result(chat))
            elif choice is None and margin != math.inf:
                state = self.model.prefill_prompt(memory, with_tools(chat, tools))
                state = None if prefers_tool_call(state, tokenizer, margin) else state
            if state is None:
                recalled = self.recall(memory, chat, sampling)
                state = self.model.prefill_prompt(self.model.empty_memory(),
                                                  with_context(with_tools(chat, tools), recalled))
                name, arguments, cut = generate_tool_call(self.model, state, schemas,
                                                          None if choice == "any" else choice,
                                                          sampling["max_new_tokens"])
                # the recollection's tokens were generated for this turn too
                info.output_tokens = self.count_tokens(recalled) + self.count_tokens(json.dumps(arguments))
                info.finish_reason = "length" if cut else "tool_calls"
                yield ToolCall(name, arguments, f"call_{uuid.uuid4().hex[:24]}")
                return
        yield from self.stream(text_only(state, tokenizer), None, info=info, **sampling)

    def recall(self, memory: CompressedMemory | MemoryViews, chat: list[dict], sampling: dict[str, Any]) -> str:
        """The first line of the answer to `chat` from `memory` (greedy, within the answer's budget): what a
        tool call is written from. "" for an empty memory, or where the answer is the model's abstention."""
        if memory.num_slots == 0:
            return ""
        with self.lock:
            text = "".join(self.model.stream(memory, chat, reading=None, max_new_tokens=sampling["max_new_tokens"],
                                             stop=["\n", *sampling["stop"]])).strip()
        return "" if text == self.model.config.abstention else text

    def stream(self, memory: CompressedMemory | MemoryViews, prompt: Any, **kwargs) -> Iterator[str]:
        with self.lock:
            yield from self.model.stream(memory, prompt, reading=None, **kwargs)


class CachedEmbedding:
    """A framework's embedding model as the `embed(texts) -> vectors` that `rcc_model.read_within` fuses with
    BM25, each text embedded once: the same window texts are ranked for every question about them."""

    def __init__(self, embed_texts: Callable[[list[str]], Sequence[Sequence[float]]], cache_size: int = 8192):
        self.embed_texts = embed_texts
        self.cache_size = cache_size
        self._cache: OrderedDict[str, list[float]] = OrderedDict()
        self._lock = threading.Lock()

    def __call__(self, texts: Sequence[str]) -> list[list[float]]:
        with self._lock:
            missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
            if missing:
                vectors = self.embed_texts(missing)
                if len(vectors) != len(missing):
                    raise ValueError(f"the embedding model returned {len(vectors)} vectors for {len(missing)} texts")
                self._cache.update((t, list(map(float, v))) for t, v in zip(missing, vectors))
            found = [self._cache[t] for t in texts]
            for text in texts:
                self._cache.move_to_end(text)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
            return found


def pop_sampling(kwargs: dict[str, Any], owner: Any, stop: Sequence[str]) -> dict[str, Any]:
    """Per-call sampling settings taken out of `kwargs`, defaulting to the integration object's fields; checked
    here (`SamplingParams`), before anything is compressed."""
    sampling = {"max_new_tokens": kwargs.pop("max_tokens", owner.max_tokens),
                "temperature": kwargs.pop("temperature", owner.temperature),
                "top_p": kwargs.pop("top_p", owner.top_p), "seed": kwargs.pop("seed", owner.seed)}
    SamplingParams(**sampling)
    return {**sampling, "stop": stop}


def engine_for(model: str | Path | RCCModel, rate: int | None = None) -> Engine:
    """The shared engine of a packaged name, a checkpoint folder, or an `RCCModel` instance (loaded once per
    weight set: a checkpoint with weights of their own for `rate` loads those). A `rate` the model was never
    trained at is refused here, before anything is compressed."""
    if isinstance(model, RCCModel):
        key, load = f"instance:{id(model)}", lambda: model
    else:
        own = rate in rate_folders(resolve_checkpoint(model))
        key = f"{model}@r{rate}" if own else str(model)
        load = partial(RCCModel.from_pretrained, str(model), rate=rate if own else None)
    with _ENGINES_LOCK:
        if key not in _ENGINES:
            _ENGINES[key] = Engine(load())
        engine = _ENGINES[key]
    engine.model.config.check_rate(rate)
    return engine


READ_AHEAD = 32  # items a stream computes before its reader takes them; then it waits for the reader
IDLE_SECONDS = 2.0  # a stream this long unread, read-ahead full, gives the model up to a waiting call


async def iterate_in_thread(make_iterator: Callable[[], Iterator[Any]],
                            lock_of: Callable[[], ModelLock] | None = None) -> AsyncIterator[Any]:
    """Run a blocking iterator in a worker thread and yield its items on the event loop as they come.

    The worker stops, closing the iterator (so the model's lock is released), when the reader goes away: at
    the reader's `aclose`, cancellation or garbage collection, or when its event loop closes, checked between
    items. A reader that stops reading has at most `READ_AHEAD` items computed for it, then the worker waits;
    left unread for `IDLE_SECONDS` while another call waits for the model's lock (`lock_of()`, read in the
    worker, where the model may still be loading), the stream gives the model up: its reader, if it comes
    back, gets the items computed, then `StreamStopped`. The worker is a daemon thread: a program that ends
    with a stream unread does not wait for it.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    done = object()
    reader = threading.Condition()
    unread, last_read, gone, finished = 0, time.monotonic(), False, False
    lock: ModelLock | None = None

    def deliver(item: Any) -> bool:
        """Hand `item` to the reader; False when its event loop is closed (nobody will read)."""
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
        except RuntimeError:
            return False
        return True

    def wait_for_reader() -> bool:
        """Wait while the read-ahead is full; False when the reader is gone; `StreamStopped` when it idles
        while another call waits for the model."""
        with reader:
            while unread >= READ_AHEAD and not gone and not loop.is_closed():
                if lock is not None and lock.contended and time.monotonic() - last_read >= IDLE_SECONDS:
                    raise StreamStopped(f"this stream was stopped after {IDLE_SECONDS:g} s unread while another "
                                        "call waited for the model: read a stream to its end, or aclose() it")
                reader.wait(0.05)
            return not gone and not loop.is_closed()

    def produce() -> None:
        nonlocal unread, lock
        iterator: Iterator[Any] | None = None
        try:
            iterator = make_iterator()
            lock = lock_of() if lock_of is not None else None
            for item in iterator:
                with reader:
                    unread += 1
                if not deliver(item) or not wait_for_reader():
                    break
        except BaseException as error:
            deliver(error)
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()  # in this thread, which holds the model's lock while the iterator is open
            deliver(done)

    threading.Thread(target=produce, name="rcc-stream", daemon=True).start()
    try:
        while (item := await queue.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            with reader:
                unread, last_read = unread - 1, time.monotonic()
                reader.notify()
            yield item
        finished = True
    finally:
        with reader:
            gone = True
            reader.notify()
        # The model is free once aclose() returns: wait for the worker's last word (not when collected, the
        # event loop no longer running, as a program ends).
        while not finished and loop.is_running() and await queue.get() is not done:
            pass
