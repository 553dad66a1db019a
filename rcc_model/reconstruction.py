"""Reading a memory through its reconstruction: the decoder regenerates the text each window holds, and the
untouched base model answers from that text as it would from the original.

Why: the decoder regenerates a window far more faithfully than it answers from the window's slots, so an open
question about a real document is answered better from the reconstruction, at the cost of decoding it (seconds
per window on a CPU) and of an answer whose KV cache holds the text read, r times the slots it came from.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from tqdm.auto import tqdm

from rcc_model.beam_search import Search, beam_search
from rcc_model.memory import CompressedMemory
from rcc_model.prompts import question_of, text_then_question
from rcc_model.reading import Reading, read_within


@torch.no_grad()
def reconstruct_windows(model, memory: CompressedMemory, *, batch_size: int = 8, no_repeat_ngram_size: int = 0,
                        num_beams: int | None = None, verify: float | None = None, anchored: bool | None = None,
                        progress: bool = False) -> list[list[int]]:
    """The token ids of each window's text, as `RCCModel.reconstruct` regenerates them (same arguments); with
    `progress`, a bar over the windows on stderr."""
    model.check_memory(memory)
    search = Search.of(model.config, num_beams, verify, anchored)
    texts: list[list[int]] = []
    windows = memory.windows()
    bar = tqdm(total=len(windows), desc="reconstructing", unit="window", disable=not progress)
    for start in range(0, len(windows), batch_size):
        chunk = windows[start:start + batch_size]
        if not search.greedy:
            # the best hypothesis of a longer length, cut, is not the best of its own: search each length apart
            found = {}
            for length in {m.token_count for m in chunk}:
                same = [i for i, m in enumerate(chunk) if m.token_count == length]
                rows = beam_search(model, [chunk[i] for i in same], length, search.num_beams,
                                   no_repeat_ngram_size, search.verify, search.anchored).ids
                found.update(zip(same, rows))
            rows = [found[i] for i in range(len(chunk))]
        else:
            length = max(m.token_count for m in chunk)
            rows = model.generate_ids(chunk, max_new_tokens=length, min_new_tokens=length,
                                     no_repeat_ngram_size=no_repeat_ngram_size)
        texts += [list(row[: window.token_count]) for window, row in zip(chunk, rows)]
        bar.update(len(chunk))
    bar.close()
    return texts


@torch.no_grad()
def reconstruction_prompt(model, memory: CompressedMemory, prompt: str | Sequence[dict],
                          read_slots: int | None = None, rank: Mapping | None = None,
                          **search) -> tuple[str | list[dict], Reading]:
    """`prompt` with the text the memory holds put before its question (its last user turn, or the whole
    string), and what was read: the prompt the decoder, without memory, answers as the base model would
    from the original text (`RCCModel.ask_from_reconstruction`).

    With `read_slots`, a memory larger than that is read through the reconstructed windows that best match the
    question (`read_within`, BM25 over the reconstructions: the memory alone, no stored text). `rank`
    (`reconstruct`'s settings, e.g. `ANCHORED_GREEDY`) reconstructs the windows for that ranking alone, more
    cheaply, and only the windows read again with `search`; None ranks on the reconstructions read.
    `search` is `reconstruct_windows`'s (`num_beams`, `verify`, `anchored`, `progress`, ...).
    """
    question = question_of(prompt)
    tokenizer = model._require_tokenizer()

    def texts(windows: CompressedMemory, settings: Mapping) -> list[str]:
        return [tokenizer.decode(ids, skip_special_tokens=True)
                for ids in reconstruct_windows(model, windows, **settings)]

    budget = read_slots or max(memory.num_slots, 1)
    ranked = rank is not None and memory.num_slots > budget
    reading = read_within(question, [memory], [texts(memory, rank if ranked else search)], budget)
    if ranked:
        reading.texts = texts(reading.memory, search)
    read = text_then_question("".join(reading.texts or []), question)
    if isinstance(prompt, str):
        return read, reading
    return [*prompt[:-1], {**prompt[-1], "content": read}], reading
