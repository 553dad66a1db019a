"""`StaticDecoder` steps against the stock decoder `forward` they replace in cached decoding: the same logits bit
for bit, padded batches and single rows, with LoRA adapters on and off, in float32 (plain products) and bfloat16
(prepacked products on the CPU)."""

from contextlib import contextmanager
from unittest import mock

import pytest
import torch

from rcc_model import MemoryViews
from rcc_model.adapters import add_lora
from rcc_model.beam_search import beam_search
from rcc_model.decoding import SamplingParams, advance, decode_tokens, extend, prefill, with_static_cache
from rcc_model.static_decoding import StaticCache, StaticDecoder
from tests.conftest import VOCAB, make_rcc, randomize_bridges


@pytest.fixture(autouse=True)
def _inference():
    with torch.no_grad():
        yield


def random_ids(n, seed=0):
    return torch.randint(0, VOCAB, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


@contextmanager
def stock_decoding():
    """Decoding as before `StaticDecoder`: every step through the stock decoder `forward`."""
    with mock.patch.object(StaticCache, "of", return_value=None):
        yield


def lora_rcc(arch="llama", dtype=torch.float32):
    """A tiny RCC whose decoder has trained-looking LoRA adapters (B not zero), in `dtype`."""
    model = randomize_bridges(make_rcc(arch, lora={"r": 2, "alpha": 4}))
    add_lora(model, model.config.lora)
    with torch.no_grad():
        for name, param in model.decoder.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.2)
    return model.to(dtype)


def step_logits(model, state, steps, static):
    """Logits of `steps` greedy steps after `state` (kept), through `StaticDecoder` or the stock decoder."""
    state = with_static_cache(model, state.clone(), steps) if static else state.clone()
    assert isinstance(state.cache, StaticCache) == static
    logits = [state.logits]
    for _ in range(steps):
        state = advance(model, state, state.logits.argmax(-1))
        logits.append(state.logits)
    return torch.stack(logits)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("arch", ["llama", "mistral", "qwen2"])
def test_steps_give_the_stock_logits_bit_for_bit(arch, dtype):
    model = randomize_bridges(make_rcc(arch)).to(dtype)
    memories = [model.compress(random_ids(n, seed=n)) for n in (40, 9, 23)]
    for state in (prefill(model, memories, [[1, 2, 3], [4], [5, 6]], 8),  # padded
                  prefill(model, memories[:1], [[1, 2, 3]], 8)):  # one row: another attention kernel
        assert torch.equal(step_logits(model, state, 8, static=True), step_logits(model, state, 8, static=False))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_lora_adapters_step_as_the_stock_modules_compute_them_with_memory_and_without(dtype):
    model = lora_rcc(dtype=dtype)
    memories = [model.compress(random_ids(n, seed=n)) for n in (40, 23)]
    for batch in (memories, [model.empty_memory()] * 2):  # the second without slots: adapters off
        state = prefill(model, batch, [[1, 2, 3], [4]], 6)
        assert torch.equal(step_logits(model, state, 6, static=True), step_logits(model, state, 6, static=False))
    one = prefill(model, memories[:1], [[1, 2, 3]], 6)
    assert not torch.equal(step_logits(model, one, 6, static=True),  # with and without slots: not the same
                           step_logits(model, prefill(model, [model.empty_memory()], [[1, 2, 3]], 6), 6, True))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_generation_writes_the_stock_greedy_tokens(dtype):
    model = lora_rcc(dtype=dtype)
    memory = model.compress(random_ids(40))
    fast = model.generate_ids(memory, [3, 4, 5], max_new_tokens=16, min_new_tokens=16)
    with stock_decoding():
        assert fast == model.generate_ids(memory, [3, 4, 5], max_new_tokens=16, min_new_tokens=16)


def test_views_and_beam_search_decode_as_with_the_stock_step():
    model = randomize_bridges(make_rcc())
    memory = model.compress(random_ids(48))
    views = MemoryViews((memory, model.compress(random_ids(48), offset=3)))
    windows = memory.windows()
    params = SamplingParams(max_new_tokens=6)

    def decode():
        return ([t.tolist() for t in decode_tokens(model, model.prefill_prompt(views, [1, 2]), params)],
                beam_search(model, [windows[0], windows[1]], 16, num_beams=3).ids,
                model.reconstruct(memory, num_beams=1, verify=0, anchored=False))

    fast = decode()
    with stock_decoding():
        assert fast == decode()


def test_a_decoding_state_takes_tokens_past_its_room_and_clones_apart():
    model = randomize_bridges(make_rcc())
    state = prefill(model, [model.compress(random_ids(n, seed=n)) for n in (40, 9)], [[1], [2, 3]], 8)
    static, stock = with_static_cache(model, state.clone(), 1), state.clone()
    for token in (5, 6, 7, 8):  # room for one: the buffers grow
        static, stock = extend(model, static, [token]), extend(model, stock, [token])
        assert torch.equal(static.logits, stock.logits)
    copy = static.clone()
    assert copy.cache.decoder is static.cache.decoder
    advance(model, copy, torch.tensor([9, 9]))
    assert (copy.cache.length, static.cache.length) == (static.cache.length + 1, stock.cache.get_seq_length())
    with pytest.raises(ValueError, match="one token at a time"):
        extend(model, static, [1, 2])


def test_the_step_follows_weights_changed_in_place():
    model = randomize_bridges(make_rcc())
    state = prefill(model, [model.compress(random_ids(n, seed=n)) for n in (40, 9)], [[1], [2, 3]], 4)
    before = StaticDecoder.of(model.decoder)
    with torch.no_grad():
        model.decoder.lm_head.weight.mul_(1.5)
    assert StaticDecoder.of(model.decoder) is not before
    assert torch.equal(step_logits(model, state, 3, static=True)[1:], step_logits(model, state, 3, static=False)[1:])


def test_decoders_of_other_architectures_keep_the_stock_step():
    model = randomize_bridges(make_rcc("neox"))
    assert StaticDecoder.of(model.decoder) is None
    state = prefill(model, [model.compress(random_ids(40))], [[1]], 4)
    assert with_static_cache(model, state, 4) is state
