"""The RCC forward pass, compression and generation on tiny random Llama and GPT-NeoX models."""

import copy

import pytest
import torch

from rcc_model import CompressedMemory, MemoryMismatchError
from rcc_model.windows import slot_positions, split_windows
from tests.conftest import VOCAB, make_rcc, randomize_bridges


def sampled_tokens(ids, window, rate):
    return [w[p] for w in split_windows(ids, window, "masked") for p in slot_positions(len(w), rate)]


def random_ids(n, seed=0):
    return torch.randint(0, VOCAB, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def test_identity_bridges_make_the_decoder_the_base_model_on_sampled_tokens_then_prompt(rotary_arch):
    model = make_rcc(rotary_arch)
    ids, prompt = random_ids(45), [5, 6, 7, 8]
    memory = model.compress(ids)
    out = model.decode(memory.states[None], torch.ones(1, memory.num_slots, dtype=torch.long),
                       torch.tensor([prompt]), torch.ones(1, len(prompt), dtype=torch.long))
    reference = model.encoder(input_ids=torch.tensor([sampled_tokens(ids, 16, 4) + prompt])).logits
    assert torch.equal(out.logits, reference)


def test_absolute_position_models_work_too():
    # GPT-2's embedding-level state includes its position embedding, so the identity invariant above does
    # not hold exactly; compression and cached generation must still agree.
    model = randomize_bridges(make_rcc("gpt2"))
    memory = model.compress(random_ids(40))
    assert model.generate_ids(memory, [1, 2], max_new_tokens=5) == full_recompute_greedy(model, memory, [1, 2], 5)


def test_layer_bridges_change_the_output_only_through_the_slots(arch):
    model = make_rcc(arch)
    memory = model.compress(random_ids(32))
    args = (memory.states[None], torch.ones(1, memory.num_slots, dtype=torch.long), torch.tensor([[1, 2]]),
            torch.ones(1, 2, dtype=torch.long))
    before = model.decode(*args).logits
    with torch.no_grad():
        model.bridges.layers[0].weight.normal_(std=0.1)
    after = model.decode(*args).logits
    assert not torch.allclose(before, after)


def test_one_compression_of_many_windows_equals_windows_compressed_one_at_a_time(arch):
    model = make_rcc(arch)
    ids = random_ids(16 * 5 + 7)
    whole = model.compress(ids, batch_size=3)
    parts = [model.compress(w) for w in split_windows(ids, 16, "masked")]
    assert whole.window_tokens == [16] * 5 + [7]
    torch.testing.assert_close(whole.states, CompressedMemory.concat(parts).states, atol=1e-5, rtol=1e-5)


def test_a_batch_of_documents_compresses_like_each_alone():
    model = make_rcc()
    docs = [random_ids(40, seed=1), random_ids(9, seed=2), random_ids(16, seed=3)]
    batch = model.compress(docs, batch_size=4)
    for doc, memory in zip(docs, batch):
        alone = model.compress(doc)
        assert memory.window_tokens == alone.window_tokens and memory.token_count == len(doc)
        torch.testing.assert_close(memory.states, alone.states, atol=1e-5, rtol=1e-5)


def test_memory_metadata_says_what_made_it():
    model = make_rcc()
    memory = model.compress(random_ids(20))
    assert (memory.rate, memory.window, memory.token_count, memory.num_slots) == (4, 16, 20, 5)
    assert memory.fingerprint == model.fingerprint
    assert memory.states.shape == (5, 3, 32)
    assert memory.nbytes == 5 * 3 * 32 * 4


def test_a_multi_rate_model_compresses_and_reads_each_of_its_rates():
    model = make_rcc(rates=[4, 8])
    ids = random_ids(40)
    at8 = model.compress(ids, rate=8)
    assert (at8.rate, at8.num_slots, model.compress(ids).num_slots) == (8, 5, 10)
    torch.testing.assert_close(at8.states, model.compress(ids).states[1::2])  # the last token of every 8
    assert len(model.generate_ids(at8, [1], max_new_tokens=2)) == 2
    with pytest.raises(ValueError, match="trained at rate 4/8, not 16"):
        model.compress(ids, rate=16)
    with pytest.raises(MemoryMismatchError, match="rate=8"):
        make_rcc().generate_ids(at8, [1], max_new_tokens=1)


@pytest.mark.parametrize("bad", ["", [], torch.zeros(0, dtype=torch.long)])
def test_empty_input_raises_value_error(bad):
    model = make_rcc()
    with pytest.raises(ValueError):
        model.compress(bad)


def test_text_input_without_a_tokenizer_is_a_clear_error():
    with pytest.raises(ValueError, match="no tokenizer"):
        make_rcc().compress("some text")


def full_recompute_greedy(model, memory, prompt, steps):
    """Greedy decoding that re-runs the whole [slots + prompt + generated] every step (no KV cache)."""
    generated = []
    for _ in range(steps):
        ids = torch.tensor([prompt + generated])
        logits = model.decode(memory.states[None], torch.ones(1, memory.num_slots, dtype=torch.long), ids,
                              torch.ones_like(ids)).logits
        generated.append(int(logits[0, -1].argmax()))
    return generated


def test_kv_cache_generation_equals_full_recomputation(arch):
    model = randomize_bridges(make_rcc(arch))
    memory = model.compress(random_ids(40))
    prompt = [3, 4, 5]
    assert model.generate_ids(memory, prompt, max_new_tokens=8) == full_recompute_greedy(model, memory, prompt, 8)


def test_batched_generation_equals_one_by_one(arch):
    model = randomize_bridges(make_rcc(arch))
    memories = [model.compress(random_ids(n, seed=n)) for n in (40, 9, 23)]
    prompts = [[1, 2, 3], [4], [5, 6]]
    batched = model.generate_ids(memories, prompts, max_new_tokens=6)
    assert batched == [model.generate_ids(m, p, max_new_tokens=6) for m, p in zip(memories, prompts)]


def test_a_prefilled_memory_answers_like_a_fresh_prefill():
    model = randomize_bridges(make_rcc())
    memory = model.compress(random_ids(40))
    prefix = model.prefill_memory(memory)
    for prompt in ([1, 2], [7, 8, 9], []):
        assert model.generate_ids(prefix, prompt, max_new_tokens=5) == model.generate_ids(memory, prompt,
                                                                                          max_new_tokens=5)


def test_sampling_is_reproducible_with_a_seed():
    model = randomize_bridges(make_rcc())
    memory = model.compress(random_ids(40))
    kwargs = dict(max_new_tokens=10, temperature=1.5, top_p=0.9, seed=3)
    assert model.generate_ids(memory, [1], **kwargs) == model.generate_ids(memory, [1], **kwargs)


def test_min_new_tokens_keeps_eos_from_ending_a_row_early():
    model = randomize_bridges(make_rcc())
    memory = model.compress(random_ids(40))
    greedy = model.generate_ids(memory, [1], max_new_tokens=6)
    model.decoder.generation_config.eos_token_id = greedy[0]  # greedy decoding now ends at once
    assert model.generate_ids(memory, [1], max_new_tokens=6) == []
    forced = model.generate_ids(memory, [1], max_new_tokens=6, min_new_tokens=4)
    assert len(forced) >= 4 and greedy[0] not in forced[:4]


def test_memory_from_another_model_is_rejected():
    a, b = make_rcc(), randomize_bridges(make_rcc())
    memory = a.compress(random_ids(20))
    with pytest.raises(MemoryMismatchError, match="compress the text again"):
        b.generate_ids(memory, [1], max_new_tokens=2)


def test_training_changes_the_fingerprint_so_old_memory_is_rejected():
    model = make_rcc()
    memory = model.compress(random_ids(20))
    before = model.fingerprint
    with torch.no_grad():
        model.decoder.lm_head.weight.mul_(1.01)
    assert model.fingerprint != before
    with pytest.raises(MemoryMismatchError):
        model.generate_ids(memory, [1], max_new_tokens=1)


def test_over_long_prompts_are_a_clear_error():
    model = make_rcc()  # 256 decoder positions
    memory = model.compress(random_ids(16 * 12))  # 48 slots
    with pytest.raises(ValueError, match="more than the decoder's 256"):
        model.generate_ids(memory, [1] * 200, max_new_tokens=10)


def test_concurrent_generation_from_threads_equals_sequential():
    from concurrent.futures import ThreadPoolExecutor

    model = randomize_bridges(make_rcc())
    memories = [model.compress(random_ids(30 + i, seed=i)) for i in range(6)]
    expected = [model.generate_ids(m, [i], max_new_tokens=6) for i, m in enumerate(memories)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda i: model.generate_ids(memories[i], [i], max_new_tokens=6), range(6)))
    assert results == expected


def test_without_memory_the_base_decoder_answers_and_with_memory_the_adapters_do():
    from rcc_model.adapters import add_lora

    model = make_rcc(lora={"r": 2, "alpha": 4})
    base = copy.deepcopy(model.decoder)
    add_lora(model, model.config.lora)
    with torch.no_grad():
        for name, param in model.decoder.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)  # trained adapters: the decoder now differs from its base
    prompt = random_ids(6, seed=3)
    expected = base.generate(torch.tensor([prompt]), max_new_tokens=5, do_sample=False)[0, 6:].tolist()
    assert model.generate_ids(model.empty_memory(), prompt, max_new_tokens=5) == expected
    memory = model.compress(random_ids(16))
    with_lora = model.generate_ids(memory, prompt, max_new_tokens=5)
    from rcc_model.adapters import without_memory_adapters

    with without_memory_adapters(model):
        without = model.generate_ids(memory, prompt, max_new_tokens=5)
    assert with_lora != without  # the adapters are back on after the no-memory call
    from concurrent.futures import ThreadPoolExecutor

    calls = [(model.empty_memory(), expected), (memory, with_lora)] * 4  # mixed, at once, in 4 threads
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda call: model.generate_ids(call[0], prompt, max_new_tokens=5), calls))
    assert results == [want for _, want in calls]
