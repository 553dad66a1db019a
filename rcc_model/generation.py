"""Generation from memory for `RCCModel`: text, token ids, streams, JSON and reconstruction, each a prefill of
`[slots + prompt]` followed by cached decoding (`rcc_model.decoding`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import torch

from rcc_model import structured
from rcc_model.abstention import weigh_abstention
from rcc_model.decoding import (
    DecodeState,
    MemoryInput,
    SamplingParams,
    decode_tokens,
    eos_token_ids,
    extend,
    prefill,
    prefill_views,
)
from rcc_model.memory import CompressedMemory, MemoryMismatchError, MemoryViews
from rcc_model.prompts import (
    Prompt,
    instruction_frame,
    prompt_ids,
    question_of,
    question_parts,
    token_ids,
    with_question,
)
from rcc_model.reading import Reading, ReadingPolicy, reading_for
from rcc_model.reconstruction import reconstruct_windows, reconstruction_prompt
from rcc_model.text_stream import TextStream


@dataclass
class GenerationInfo:
    """Filled in by `stream(..., info=...)`: why generation ended ("stop": EOS or a stop string;
    "length": the token limit), how many tokens it read and wrote, and which windows of the memory it read
    (`reading`, None where it read the memory as given). A question answered part by part (`question_parts`)
    has one info per part in `parts`, and here their sums and the last part's finish reason."""

    finish_reason: str = ""
    prompt_tokens: int = 0
    memory_slots: int = 0
    output_tokens: int = 0
    reading: Reading | None = None
    parts: list[GenerationInfo] = field(default_factory=list)

    def gather(self, parts: Sequence[GenerationInfo]) -> None:
        """Hold `parts`, the infos of the parts of one answer, and their sums."""
        self.parts = list(parts)
        self.finish_reason = parts[-1].finish_reason
        self.prompt_tokens = sum(p.prompt_tokens for p in parts)
        self.memory_slots = sum(p.memory_slots for p in parts)
        self.output_tokens = sum(p.output_tokens for p in parts)
        self.reading = None


T = TypeVar("T")  # a part of a question, as a caller holds it
PART_SEPARATOR = "\n"  # between the answers to the parts of a question (`question_parts`)


def answer_in_parts(parts: Sequence[T], answer: Callable[[T, GenerationInfo | None], Iterator[str]],
                    info: GenerationInfo | None = None) -> Iterator[str]:
    """`answer(part, part_info)` of each part streamed in turn, joined by `PART_SEPARATOR`; `info`, if given,
    then holds the parts' infos and their sums (`GenerationInfo.gather`). One part is answered into `info`
    itself."""
    if len(parts) == 1:
        yield from answer(parts[0], info)
        return
    infos = [GenerationInfo() for _ in parts]
    for k, (part, part_info) in enumerate(zip(parts, infos)):
        if k:
            yield PART_SEPARATOR
        yield from answer(part, part_info)
    if info is not None:
        info.gather(infos)


READ = ReadingPolicy()  # the model's own reading: its expand_tokens and read_slots, BM25 ranking


class QuestionNotRecalled(ValueError):
    """`ask(memory, None)` found no question compressed in the memory to answer."""


class GenerationMixin:
    """Text and token generation from memory for `RCCModel` (which provides `decode`, `check_memory`,
    `tokenizer`, `fingerprint`, `max_positions`)."""

    def prefill_memory(self, memory: CompressedMemory | MemoryViews) -> DecodeState:
        """Run a memory's slots through the decoder once; pass the result instead of the memory to answer
        many prompts without recomputing it."""
        with torch.no_grad():
            if isinstance(memory, MemoryViews):
                return prefill_views(self, memory, [])
            return prefill(self, [memory], [[]])

    def _read(self, memory: MemoryInput, prompt: Prompt, policy: ReadingPolicy | None
              ) -> tuple[MemoryInput, Prompt, Reading | None]:
        """(what the decoder reads, the prompt it reads it with, which windows) for a question asked of a memory
        as compressed (`reading_for` under `policy`); anything else, or `policy` None, is read as given."""
        if policy is None or not isinstance(memory, CompressedMemory):
            return memory, prompt, None
        try:
            question = question_of(prompt)
        except (ValueError, TypeError):  # token ids, or no question: nothing to rank against
            return memory, prompt, None
        if not question:
            return memory, prompt, None
        config = self.config
        read, reading = reading_for(
            self, memory, question, config.read_slots if policy.read_slots is None else policy.read_slots,
            expand_tokens=config.expand_tokens if policy.expand_tokens is None else policy.expand_tokens,
            embed=policy.embed)
        return read, reading.prompt(prompt), reading

    def _start(self, memory: MemoryInput, prompt: Sequence[int], params: SamplingParams) -> DecodeState:
        if isinstance(memory, DecodeState):
            if memory.fingerprint != self.fingerprint:
                raise MemoryMismatchError("this prefilled memory was made by another model")
            return extend(self, memory.clone(), token_ids(prompt, self.vocab_size, "the prompt"))
        if isinstance(memory, MemoryViews):
            return prefill_views(self, memory, prompt, params.max_new_tokens)
        return prefill(self, [memory], [prompt], params.max_new_tokens)

    @torch.no_grad()
    def generate_ids(self, memory: MemoryInput | Sequence[CompressedMemory],
                     prompt_ids: Sequence[int] | Sequence[Sequence[int]] | None = None, *,
                     max_new_tokens: int = 256, temperature: float = 0.0, top_p: float = 1.0,
                     seed: int | None = None, min_new_tokens: int = 0,
                     no_repeat_ngram_size: int = 0) -> list[int] | list[list[int]]:
        """Token ids generated from memory (+ prompt ids) until EOS or `max_new_tokens`; greedy by default.
        EOS cannot end a row before `min_new_tokens`; `no_repeat_ngram_size` as in `SamplingParams`.

        Pass lists of memories and prompts to generate for all of them in one padded batch.
        """
        params = SamplingParams(max_new_tokens, temperature, top_p, seed, min_new_tokens, no_repeat_ngram_size)
        if isinstance(memory, (CompressedMemory, MemoryViews, DecodeState)):
            state = self._start(memory, [] if prompt_ids is None else prompt_ids, params)
            batch = False
        else:
            memories = list(memory)
            prompts = list(prompt_ids) if prompt_ids is not None else [[] for _ in memories]
            state = prefill(self, memories, prompts, params.max_new_tokens)
            batch = True
        eos = eos_token_ids(self)
        outputs: list[list[int]] = [[] for _ in range(state.logits.shape[0])]
        done = [False] * len(outputs)
        for tokens in decode_tokens(self, state, params):
            for row, token in enumerate(tokens.tolist()):
                if not done[row]:
                    done[row] = token in eos
                    if not done[row]:
                        outputs[row].append(token)
            if all(done):
                break
        return outputs if batch else outputs[0]

    def _text_rows(self, state: DecodeState, params: SamplingParams, stop: Sequence[str],
                   infos: Sequence[GenerationInfo] = (), written: Sequence[int] = ()) -> Iterator[tuple[int, str]]:
        """Yield (row, text piece) as tokens arrive; a row ends at EOS, at a stop string, or at the limit.
        `written` are tokens of a single row chosen already (`weigh_abstention`), all but the last fed to `state`."""
        eos = eos_token_ids(self)
        streams = [TextStream(self._require_tokenizer(), stop) for _ in range(state.logits.shape[0])]
        done = [False] * len(streams)
        counts = [0] * len(streams)
        for tokens in self._tokens_after(state, params, written):
            for row, token in enumerate(tokens.tolist()):
                if done[row]:
                    continue
                counts[row] += 1
                if token in eos:
                    done[row] = True
                    piece = streams[row].finish()
                else:
                    piece = streams[row].push(token)
                    done[row] = streams[row].stopped
                if piece:
                    yield row, piece
            if all(done):
                break
        for row, stream in enumerate(streams):
            if not stream.stopped and (piece := stream.finish()):
                yield row, piece
        for info, finished, count in zip(infos, done, counts):
            info.finish_reason, info.output_tokens = ("stop" if finished else "length"), count

    def _tokens_after(self, state: DecodeState, params: SamplingParams, written: Sequence[int]
                      ) -> Iterator[torch.Tensor]:
        """`decode_tokens` after `written`, tokens already chosen of which `state` has fed all but the last:
        those first, then what follows them."""
        for token in written:
            yield torch.tensor([token])
        if len(written) < params.max_new_tokens and not (written and written[-1] in eos_token_ids(self)):
            yield from decode_tokens(self, extend(self, state, written[-1:]), dataclasses.replace(
                params, max_new_tokens=params.max_new_tokens - len(written)))

    def stream(self, memory: MemoryInput, prompt: Prompt = None, *, max_new_tokens: int = 256,
               temperature: float = 0.0, top_p: float = 1.0, seed: int | None = None,
               stop: Sequence[str] = (), info: GenerationInfo | None = None,
               reading: ReadingPolicy | None = READ) -> Iterator[str]:
        """Yield the answer's text piece by piece as it is generated; `info`, if given, is filled in.

        A question (a string, or messages ending in a user turn) asked of a memory as compressed reads it as
        `reading` says (`rcc_model.reading_for`: the best windows as text before the question, their
        neighbourhood as slots, within the model's budgets); `reading=None` reads the memory as given.
        A question that asks several things (`question_parts`) is answered part by part, each part with its
        own reading, the answers joined by `PART_SEPARATOR` (`ReadingPolicy.split_questions`).
        A greedy answer is the model's abstention only where it outscores the best other answer by the
        model's `abstention_margin` (`weigh_abstention`)."""
        params = SamplingParams(max_new_tokens, temperature, top_p, seed)
        yield from answer_in_parts(self._question_parts(prompt, reading), lambda part, part_info: self._stream_one(
            memory, part, params, stop, part_info, reading), info)

    @staticmethod
    def _question_parts(prompt: Prompt, policy: ReadingPolicy | None) -> list[Prompt]:
        """The prompt once per part of its question (`question_parts`), where `policy` splits questions;
        else `[prompt]`."""
        if policy is None or not policy.split_questions:
            return [prompt]
        try:
            parts = question_parts(question_of(prompt))
        except (ValueError, TypeError):  # token ids, or no question
            return [prompt]
        return [with_question(prompt, part) for part in parts] if len(parts) > 1 else [prompt]

    def _stream_one(self, memory: MemoryInput, prompt: Prompt, params: SamplingParams, stop: Sequence[str],
                    info: GenerationInfo | None, reading: ReadingPolicy | None) -> Iterator[str]:
        """`stream` of a prompt asked whole."""
        memory, prompt, chosen = self._read(memory, prompt, reading)
        ids = prompt_ids(self.tokenizer, prompt)
        with torch.no_grad():
            state, written = weigh_abstention(self, self._start(memory, ids, params), params)
            if info is not None:
                info.prompt_tokens, info.memory_slots, info.reading = len(ids), state.num_slots, chosen
            for _, piece in self._text_rows(state, params, stop, [info] if info is not None else [], written):
                yield piece

    @torch.no_grad()
    def generate(self, memory: MemoryInput | Sequence[CompressedMemory], prompt: Prompt | list[Prompt] = None,
                 *, max_new_tokens: int = 256, temperature: float = 0.0, top_p: float = 1.0,
                 seed: int | None = None, stop: Sequence[str] = (), reading: ReadingPolicy | None = READ
                 ) -> str | list[str]:
        """Text generated from memory and a prompt (a string, token ids, or chat messages).

        A list of memories with a list of as many prompts (or None) generates for all pairs in one batch,
        without weighing the abstention or selecting; one answer weighs it and reads its memory (`reading`) as
        `stream` does.
        """
        if isinstance(memory, (CompressedMemory, MemoryViews, DecodeState)):
            return "".join(self.stream(memory, prompt, max_new_tokens=max_new_tokens, temperature=temperature,
                                       top_p=top_p, seed=seed, stop=stop, reading=reading))
        params = SamplingParams(max_new_tokens, temperature, top_p, seed)
        memories = list(memory)
        prompts = [None] * len(memories) if prompt is None else list(prompt)
        if len(prompts) != len(memories):
            raise ValueError(f"pass one prompt per memory: {len(memories)} memories, {len(prompts)} prompts")
        state = prefill(self, memories, [prompt_ids(self.tokenizer, p) for p in prompts], params.max_new_tokens)
        texts = [""] * len(memories)
        for row, piece in self._text_rows(state, params, stop):
            texts[row] += piece
        return texts

    @torch.no_grad()
    def generate_json(self, memory: MemoryInput, prompt: Prompt, schema: dict, *,
                      max_new_tokens: int | None = None, reading: ReadingPolicy | None = READ) -> object:
        """A JSON value matching `schema` (valid by construction), generated from memory and a prompt, the memory
        read as `stream` reads it (`reading`).

        `max_new_tokens` caps the tokens the model writes into values (strings end early, arrays stop at
        their minimum, numbers keep one digit); the structure is always completed, so the value stays valid.
        See `rcc_model.json_schema` for the supported schema subset; anything else is an
        `UnsupportedSchemaError` (a `ValueError`) naming the keyword, raised before anything is generated.
        """
        memory, prompt, _ = self._read(memory, prompt, reading)
        return structured.generate_json(self, self.prefill_prompt(memory, prompt), schema, max_new_tokens)[0]

    @torch.no_grad()
    def prefill_prompt(self, memory: MemoryInput, prompt: Prompt) -> DecodeState:
        """The decoder state after reading memory and a prompt, both as given: the start of any custom decoding
        (`reading_for` says what of a long memory to give it)."""
        return self._start(memory, prompt_ids(self.tokenizer, prompt), SamplingParams(max_new_tokens=1))

    @torch.no_grad()
    def ask(self, memory: MemoryInput, question: str | None = None, *, max_new_tokens: int = 256,
            stop: Sequence[str] = (), reading: ReadingPolicy | None = READ, **sampling) -> str:
        """Answer a question about the memory through the base model's chat template, reading it as `stream`
        does (`reading`).

        `question=None` is the paper's instruction-reconstruction mode: the question was compressed with
        the context (`compress(context + "\n\n" + question)`); the decoder first regenerates it from
        memory, then answers. Only the answer is returned; `max_new_tokens` bounds the answer, and the recall
        of the question may take as many tokens as the memory holds (the question is part of them). A memory
        from which no question is recalled within that is a `ValueError`, not an empty answer.
        """
        if question is not None:
            return self.generate(memory, [{"role": "user", "content": question}],
                                 max_new_tokens=max_new_tokens, stop=stop, reading=reading, **sampling)
        tokenizer = self._require_tokenizer()
        frame = instruction_frame(tokenizer)
        header = prompt_ids(tokenizer, frame.header)
        recall = self._recall_budget(memory, len(prompt_ids(tokenizer, frame.turn_end)), len(header) + max_new_tokens)
        params = SamplingParams(max_new_tokens + recall, **sampling)
        state = self._start(memory, header, params)
        text = TextStream(tokenizer, skip_special_tokens=False)
        # Where decoding stops: the text of any token the model ends an answer with. The question's turn may end
        # with one of them, so the answer is cut at their text rather than decoding stopping at the token.
        ends = [end for end in (tokenizer.decode([i]) for i in sorted(eos_token_ids(self))) if end]
        answer_start = None
        for step, tokens in enumerate(decode_tokens(self, state, params)):
            text.push(int(tokens[0]))
            _, found, answer = text.text.partition(frame.turn_end)
            if found and answer_start is None:
                answer_start = step + 1
            if found and (any(end in answer for end in ends) or step + 1 - answer_start >= max_new_tokens):
                break
        _, found, answer = text.text.partition(frame.turn_end)
        if not found:
            raise QuestionNotRecalled(f"no question was recalled from memory in {params.max_new_tokens} tokens: "
                             "ask(memory, None) answers a question compressed after its context "
                             "(compress(context + '\\n\\n' + question)); otherwise pass the question")
        for s in (*ends, *stop):
            answer = answer.split(s)[0] if s else answer
        return answer.strip()

    def _recall_budget(self, memory: MemoryInput, turn_end: int, reserved: int) -> int:
        """Tokens the recall of a question from `memory` may take: the tokens the memory holds and the `turn_end`
        tokens after them, no more than fit in the decoder's positions after its slots and `reserved` prompt
        and answer tokens."""
        if isinstance(memory, DecodeState):
            held, slots = memory.num_slots * max(self.config.trained_rates), memory.num_slots
        else:
            held, slots = memory.token_count, memory.num_slots
        return max(1, min(held + turn_end, self.max_positions - slots - reserved))

    @torch.no_grad()
    def reconstruct(self, memory: CompressedMemory, *, batch_size: int = 8,
                    no_repeat_ngram_size: int = 0, num_beams: int | None = None, verify: float | None = None,
                    anchored: bool | None = None, progress: bool = False) -> str | list[int]:
        """The text the memory holds, regenerated window by window (batched); token ids without a tokenizer.
        `no_repeat_ngram_size` n > 0 keeps each window's text from repeating an n-gram of its own;
        `num_beams` > 1 decodes each window by beam search (k times the rows), which can also check each block
        it writes against the memory (`verify`, nats per unit of distance) and write the token the memory
        holds at each slot position (`anchored`): `rcc_model.beam_search`. Each left None is the model's own
        setting (`RCCConfig.reconstruct_*`; the packaged default's: 8 beams, verify 30, anchored);
        `num_beams=1, verify=0, anchored=False` is greedy decoding, several times faster.

        Each window is decoded from its own slots, as in training, so length is not limited by the
        decoder's position range. The memory records each window's token count, so a window is decoded to
        exactly that length: an early EOS would only cut the text short. `progress` shows a bar over the
        windows on stderr.
        """
        rows = reconstruct_windows(self, memory, batch_size=batch_size, no_repeat_ngram_size=no_repeat_ngram_size,
                                   num_beams=num_beams, verify=verify, anchored=anchored, progress=progress)
        ids = [token for row in rows for token in row]
        if self.tokenizer is None:
            return ids
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    @torch.no_grad()
    def ask_from_reconstruction(self, memory: CompressedMemory, question: str, *, read_slots: int | None = None,
                                max_new_tokens: int = 256, stop: Sequence[str] = (), search: dict | None = None,
                                **sampling) -> str:
        """Answer a question from the memory's reconstructed text, which the decoder reads without memory (the
        untouched base model) in its chat template: `reconstruction_prompt`, whose `read_slots` this takes, and
        its other settings in `search` (`reconstruct`'s, the model's own where left out, and `rank`;
        `rcc_model.reconstruction`).

        Example:
            .. code-block:: python

                memory = model.compress(report)           # stored, without the text
                model.ask_from_reconstruction(memory, "Who signed the contract?", read_slots=64)
                # rank the windows on cheap reconstructions; only the one read is decoded with the checks
                from rcc_model import ANCHORED_GREEDY

                model.ask_from_reconstruction(memory, "Who signed the contract?", read_slots=64,
                                              search={"rank": ANCHORED_GREEDY})
        """
        prompt, _ = reconstruction_prompt(self, memory, [{"role": "user", "content": question}], read_slots,
                                          **(search or {}))
        return self.generate(self.empty_memory(), prompt, max_new_tokens=max_new_tokens, stop=stop, reading=None,
                             **sampling)
