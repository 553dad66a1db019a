"""Objectives, collation, the training forward, and the training loop with exact resume, on tiny models."""

import copy
import json
import random
import re

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from rcc_model import adapters, bases
from rcc_model.training import loop, objectives
from rcc_model.training.batch import IGNORE, collate
from rcc_model.training.config import TrainConfig
from rcc_model.training.loop import export, lr_at, train
from tests.conftest import TOKENS, make_rcc


def test_reconstruction_targets_are_spans_of_the_compressed_window():
    build = objectives.reconstruction(TOKENS, window=32, span=16, cue=4)
    for seed in range(30):
        e = build(random.Random(seed))
        assert len(e.context) == 32
        piece = e.prompt + e.target
        assert any(e.context[i:i + len(piece)] == piece for i in range(33 - len(piece)))
        assert len(e.prompt) in (0, 4)
        if not e.prompt:
            assert e.target == e.context  # uncued: the whole window, as `reconstruct` asks


def test_continuation_targets_follow_the_window():
    e = objectives.continuation(TOKENS, window=32, span=8)(random.Random(1))
    start = next(i for i in range(len(TOKENS)) if TOKENS[i:i + 32].tolist() == e.context)
    assert TOKENS[start + 32:start + 40].tolist() == e.target


def test_collate_masks_prompt_and_padding_out_of_the_loss():
    batch = collate([objectives.Example([1] * 40, [5, 6], [7, 8, 9]), objectives.Example([2] * 10, [], [3])],
                    window=16, padding="masked")
    assert batch.window_owner == [0, 0, 0, 1] and batch.window_lengths == [16, 16, 8, 10]
    assert batch.labels.tolist() == [[IGNORE, IGNORE, 7, 8, 9], [3, IGNORE, IGNORE, IGNORE, IGNORE]]
    assert batch.attention_mask.tolist() == [[1] * 5, [1, 0, 0, 0, 0]]


def test_the_training_loss_is_the_decoders_cross_entropy_on_targets():
    model = make_rcc()
    example = objectives.Example(list(range(20)), [5], [6, 7])
    batch = collate([example], window=16, padding="masked")
    loss = model(batch.window_ids, batch.window_lengths, batch.window_owner, batch.input_ids,
                 batch.attention_mask, batch.labels)
    memory = model.compress(example.context)
    ids = torch.tensor([[5, 6, 7]])
    logits = model.decode(memory.states[None], torch.ones(1, memory.num_slots, dtype=torch.long), ids,
                          torch.ones_like(ids)).logits[0]
    expected = torch.nn.functional.cross_entropy(logits[-3:-1], torch.tensor([6, 7]))  # positions of 5 and 6
    torch.testing.assert_close(loss, expected, atol=1e-5, rtol=1e-5)


def test_a_batch_of_one_and_many_window_contexts_has_the_loss_of_its_examples_decoded_alone():
    """The loss is the mean over every target token of the batch, however its rows are grouped for decoding."""
    model = make_rcc()
    examples = [objectives.Example(list(range(1, 1 + n)), [5] * p, [6, 7, 8][:t])
                for n, p, t in [(16, 1, 3), (70, 0, 2), (12, 2, 1), (16, 1, 3)]]
    batch = collate(examples, window=16, padding="masked")
    loss = model(batch.window_ids, batch.window_lengths, batch.window_owner, batch.input_ids,
                 batch.attention_mask, batch.labels)
    sums, count = 0.0, 0
    for example in examples:
        alone = collate([example], window=16, padding="masked")
        n = len(example.target)
        sums += n * model(alone.window_ids, alone.window_lengths, alone.window_owner, alone.input_ids,
                          alone.attention_mask, alone.labels)
        count += n
    torch.testing.assert_close(loss, sums / count, atol=1e-5, rtol=1e-5)


def test_rows_are_split_where_padding_wastes_the_most():
    from rcc_model.modeling import _length_groups

    assert _length_groups([64] * 7 + [256], [150] * 8) == [list(range(7)), [7]]
    assert _length_groups([64, 64], [150, 150]) == [[0, 1]]


def test_gradients_reach_bridges_and_encoder():
    model = make_rcc(bridge_init="normal")
    batch = collate([objectives.Example(list(range(20)), [], [6, 7, 8])], window=16, padding="masked")
    model(batch.window_ids, batch.window_lengths, batch.window_owner, batch.input_ids, batch.attention_mask,
          batch.labels).backward()
    assert model.bridges.layers[1].weight.grad.abs().sum() > 0
    assert model.encoder.model.layers[0].mlp.up_proj.weight.grad.abs().sum() > 0


def test_warmup_then_cosine_schedule():
    config = TrainConfig(data="d", out="o", lr=1.0, min_lr=0.1, warmup=10, steps=110)
    assert lr_at(config, 0) == pytest.approx(0.1) and lr_at(config, 9) == pytest.approx(1.0)
    assert lr_at(config, 60) == pytest.approx(0.55) and lr_at(config, 110) == pytest.approx(0.1)


def test_bad_training_settings_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="trainable"):
        TrainConfig(data="d", out="o", trainable="encoder-only")
    with pytest.raises(ValueError, match="stop_at"):
        TrainConfig(data="d", out="o", stop_at=0)
    for rate, match in [(6, "rate=6, window=256"), ([4, 0], "rate=0"), ([], "at least one rate")]:
        with pytest.raises(ValueError, match=match):  # before any model loads
            TrainConfig(data="d", out="o", rate=rate)
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"data": "d", "out": "o", "learning_rate": 1}))
    with pytest.raises(ValueError, match="unknown training settings"):
        TrainConfig.load(path)


@pytest.mark.parametrize("stop,stopped_at", [({"max_minutes": 0.0}, 1), ({"stop_at": 3}, 3)])
def test_a_run_interrupted_and_resumed_ends_where_an_uninterrupted_run_ends(run_config, tmp_path, stop, stopped_at):
    straight = TrainConfig.load(run_config)
    straight.out = str(tmp_path / "straight")
    train(straight)

    interrupted = TrainConfig.load(run_config)
    for name, value in stop.items():  # a time budget stops after the first step; stop_at after its own
        setattr(interrupted, name, value)
    train(interrupted)
    assert json.loads((tmp_path / "run" / "state" / "state.json").read_text())["step"] == stopped_at
    assert not (tmp_path / "run" / "final").exists()
    train(TrainConfig.load(run_config))

    a = load_file(str(tmp_path / "straight" / "state" / "weights.safetensors"))
    b = load_file(str(tmp_path / "run" / "state" / "weights.safetensors"))
    assert a.keys() == b.keys() and any("lora_" in k for k in a)
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=0, rtol=0)
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if r["event"] == "start"] == [0, stopped_at]
    assert (tmp_path / "run" / "final" / "rcc_config.json").is_file()


@pytest.mark.parametrize("kind", ["reconstruction", "continuation", "long_context"])
def test_aligned_contexts_start_on_window_boundaries_inside_the_cache(kind):
    window, aligned = 32, 10
    build = {"reconstruction": objectives.reconstruction(TOKENS, window, 16, 4, aligned=aligned),
             "continuation": objectives.continuation(TOKENS, window, 8, aligned=aligned),
             "long_context": objectives.long_context(TOKENS, window, 3, 16, 4, aligned=aligned)}[kind]
    for seed in range(40):
        e = build(random.Random(seed))
        assert e.context_start % window == 0
        assert e.context_start + len(e.context) <= aligned * window
        assert TOKENS[e.context_start:e.context_start + len(e.context)].tolist() == e.context
    assert objectives.reconstruction(TOKENS, window, 16, 4)(random.Random(0)).context_start is None


def test_collate_gives_cache_rows_only_when_every_context_is_aligned():
    aligned = objectives.Example([1] * 40, [], [1], context_start=64)
    batch = collate([aligned, objectives.Example([2] * 16, [], [2], context_start=0)], window=16, padding="masked")
    assert batch.window_rows == [4, 5, 6, 0]
    assert collate([aligned, objectives.Example([2] * 16, [], [2])], window=16, padding="masked").window_rows is None


def test_cached_slot_states_are_the_frozen_encoders(tmp_path):
    from rcc_model.training.slot_cache import build_slot_cache

    model = make_rcc(bridge_init="normal")
    cache = build_slot_cache(model, TOKENS, 20, tmp_path / "cache")
    ids = torch.from_numpy(TOKENS[3 * 16:5 * 16].astype(np.int64)).view(2, 16)
    live = model.encode_windows(ids, [16, 16])
    assert torch.equal(cache.rows([3, 4]), live.to(torch.bfloat16))
    batch = collate([objectives.Example(TOKENS[48:80].tolist(), [5], [6, 7], context_start=48)], 16, "masked")
    args = (batch.window_ids, batch.window_lengths, batch.window_owner, batch.input_ids, batch.attention_mask,
            batch.labels)
    torch.testing.assert_close(model(*args, window_states=live), model(*args), atol=0, rtol=0)
    with pytest.raises(IndexError):
        cache.rows([20])


def test_the_slot_cache_is_reused_for_the_same_encoder_and_rebuilt_for_another(tmp_path):
    from rcc_model.training.slot_cache import build_slot_cache

    model = make_rcc()
    first = build_slot_cache(model, TOKENS, 8, tmp_path).rows([2])
    shard = next(tmp_path.glob("shard-*.safetensors"))
    written = shard.stat().st_mtime_ns
    build_slot_cache(model, TOKENS, 8, tmp_path)
    assert shard.stat().st_mtime_ns == written
    with torch.no_grad():
        model.encoder.model.layers[0].mlp.up_proj.weight.mul_(1.5)
    assert not torch.equal(build_slot_cache(model, TOKENS, 8, tmp_path).rows([2]), first)
    with pytest.raises(ValueError, match="between 1 and"):
        build_slot_cache(model, TOKENS, 10_000, tmp_path)


def test_a_slot_cache_needs_a_frozen_encoder_and_stream_objectives():
    with pytest.raises(ValueError, match="frozen encoder"):
        TrainConfig(data="d", out="o", slot_cache=10)
    with pytest.raises(ValueError, match="qa"):
        TrainConfig(data="d", out="o", slot_cache=10, train_encoder=False, objectives={"qa": 1.0})
    with pytest.raises(ValueError, match="numbers"):
        TrainConfig(data="d", out="o", slot_cache=10, train_encoder=False,
                    objectives={"reconstruction": 1.0, "numbers": 0.5})


def test_a_run_from_the_slot_cache_trains_without_the_encoder(run_config, tmp_path, monkeypatch):
    from rcc_model.modeling import RCCModel

    config = TrainConfig.load(run_config)
    config.train_encoder, config.slot_cache, config.eval_every = False, 100, 100
    encoded = []
    original = RCCModel.encode_windows
    monkeypatch.setattr(RCCModel, "encode_windows", lambda self, ids, lengths, rate=None: encoded.append(len(lengths))
                        or original(self, ids, lengths, rate))
    train(config)
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if r["event"] == "train"] == [1, 2, 3, 4]
    # one whole shard (256 of TOKENS' 312 windows) in batches of 8, then the first and last evaluations
    assert encoded == [8] * 32 + encoded[-2:] and len(encoded) == 34


def test_a_diverging_run_stops_at_its_first_non_finite_loss_with_the_last_checkpoint_intact(run_config, tmp_path,
                                                                                               monkeypatch):
    from rcc_model.modeling import RCCModel

    forward, calls = RCCModel.forward, []

    def diverging(self, *args, **kwargs):  # the third training forward (step 2) returns NaN
        loss = forward(self, *args, **kwargs)
        if self.training:
            calls.append(1)
        return loss * float("nan") if self.training and len(calls) == 3 else loss

    monkeypatch.setattr(RCCModel, "forward", diverging)
    with pytest.raises(FloatingPointError, match="step 2"):
        train(TrainConfig.load(run_config))
    assert json.loads((tmp_path / "run" / "state" / "state.json").read_text())["step"] == 2  # saved before step 2
    weights = load_file(str(tmp_path / "run" / "state" / "weights.safetensors"))
    assert all(torch.isfinite(w).all() for w in weights.values())
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if r["event"] == "train"] == [1, 2]


def test_the_attention_kernel_is_a_training_setting(run_config, tmp_path):
    config = TrainConfig.load(run_config)
    config.steps, config.attention = 1, "eager"
    train(config)
    start = json.loads((tmp_path / "run" / "log.jsonl").read_text().splitlines()[0])
    assert start["attention"] == "eager" and start["device"] == "cpu"
    config.out, config.attention = str(tmp_path / "default"), None  # the base's own kernel off CUDA
    train(config)
    start = json.loads((tmp_path / "default" / "log.jsonl").read_text().splitlines()[0])
    assert start["attention"] == "sdpa"


def test_compiled_blocks_train_to_the_losses_of_eager_ones(run_config, tmp_path):
    config = TrainConfig.load(run_config)
    config.steps = 2
    losses = {}
    for compile_blocks in (False, True):
        config.out, config.compile = str(tmp_path / f"compile-{compile_blocks}"), compile_blocks
        train(config)
        records = [json.loads(line) for line in (tmp_path / config.out / "log.jsonl").read_text().splitlines()]
        losses[compile_blocks] = [r["loss"] for r in records if r["event"] == "train"]
    assert len(losses[True]) == 2
    np.testing.assert_allclose(losses[True], losses[False], rtol=1e-4)


@pytest.fixture()
def bf16_accelerator():
    """accelerate holds one mixed-precision setting per process, fixed by the first `Accelerator`: a bf16 run
    after fp32 ones needs it cleared, and the fp32 runs after it need it cleared again."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state()
    yield
    AcceleratorState._reset_state()


def test_bf16_on_a_cpu_without_bf16_instructions_is_refused_before_anything_is_written_and_auto_is_fp32(
        run_config, tmp_path, monkeypatch):
    config = TrainConfig.load(run_config)
    config.precision, config.out = "bf16", str(tmp_path / "run")
    monkeypatch.setattr(bases, "cpu_has_fast_bf16", lambda: False)
    with pytest.raises(RuntimeError, match=r'bfloat16 matrix instructions.*"precision": "auto" or "no"'):
        train(config)
    assert not (tmp_path / "run").exists()
    config.precision = "auto"  # float32 there
    train(config)
    start = json.loads((tmp_path / "run" / "log.jsonl").read_text().splitlines()[0])
    assert start["precision"] == "no"


@pytest.mark.skipif(not bases.cpu_has_fast_bf16(), reason="this CPU has no bfloat16 matrix instructions: bf16 training "
                    "is refused here")
def test_adapter_inputs_left_in_bf16_train_to_bitwise_the_same_weights(run_config, tmp_path, monkeypatch,
                                                                      bf16_accelerator):
    config = TrainConfig.load(run_config)
    config.steps, config.precision = 2, "bf16"
    weights, flags = {}, []

    def skip_and_record(model):
        adapters.skip_input_casts(model)
        flags.extend(m.cast_input_dtype_enabled for m in model.modules() if hasattr(m, "lora_A"))

    for skipped in (True, False):
        # without: peft's own path, each adapter input cast to float32 and back to bf16 by autocast
        monkeypatch.setattr(loop, "skip_input_casts", skip_and_record if skipped else lambda model: None)
        config.out = str(tmp_path / f"skipped-{skipped}")
        train(config)
        weights[skipped] = load_file(str(tmp_path / config.out / "state" / "weights.safetensors"))
    assert flags and not any(flags)
    assert weights[True].keys() == weights[False].keys() and any("lora_" in k for k in weights[True])
    for name, value in weights[True].items():
        assert torch.equal(value, weights[False][name]), name


def test_a_run_from_init_continues_at_the_rate_the_config_asks(run_config, tmp_path):
    first = TrainConfig.load(run_config)
    first.steps = 1
    train(first)
    second = TrainConfig.load(run_config)
    second.init, second.out, second.rate, second.steps = str(tmp_path / "run" / "final"), str(tmp_path / "r8"), 8, 1
    train(second)
    saved = json.loads((tmp_path / "r8" / "final" / "rcc_config.json").read_text())
    assert saved["rate"] == 8 and "trained_rate" not in saved.get("extra", {})
    second.window = 32
    with pytest.raises(ValueError, match="window=16"):
        train(second)


def test_how_the_model_is_read_travels_with_the_checkpoints_a_run_saves(run_config, tmp_path):
    config = TrainConfig.load(run_config)
    config.steps, config.read_slots, config.read_alignments = 1, 8, 2
    train(config)
    exported = export(config, tmp_path / "export")
    for folder in (tmp_path / "run" / "final", exported):
        saved = json.loads((folder / "rcc_config.json").read_text())
        assert (saved["read_slots"], saved["read_alignments"]) == (8, 2)
    config.read_alignments = 5  # more alignments than the rate has offsets: refused like any RCCConfig
    with pytest.raises(ValueError, match="read_alignments"):
        export(config, tmp_path / "bad")


def test_every_run_is_measured_on_the_same_heldout_batches_whatever_its_seed(run_config, tmp_path):
    first = TrainConfig.load(run_config)
    first.steps = 1
    train(first)
    logs = []
    for seed in (1, 2):
        stage = TrainConfig.load(run_config)
        stage.init, stage.steps = str(tmp_path / "run" / "final"), 1
        stage.out, stage.seed = str(tmp_path / f"s{seed}"), seed
        train(stage)
        logs.append([json.loads(line) for line in (tmp_path / f"s{seed}" / "log.jsonl").read_text().splitlines()])
    heldout = [next(r["heldout_loss"] for r in log if r["event"] == "eval") for log in logs]
    trained = [next(r["loss"] for r in log if r["event"] == "train") for log in logs]
    assert heldout[0] == heldout[1]  # the same model on the same examples
    assert trained[0] != trained[1]  # while training batches follow the seed


def test_one_model_trains_at_several_rates_in_turn(run_config, tmp_path, monkeypatch):
    from rcc_model.modeling import RCCModel

    config = TrainConfig.load(run_config)
    config.rate = [4, 8]
    seen = []
    original = RCCModel.forward
    monkeypatch.setattr(RCCModel, "forward", lambda self, *a, rate=None, **k: (torch.is_grad_enabled() and
                        seen.append(rate)) or original(self, *a, rate=rate, **k))
    train(config)
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    evals = [r for r in log if r["event"] == "eval"]
    assert [sorted(r["heldout_loss_by_rate"]) for r in evals] == [["4", "8"]] * 3
    assert all(r["heldout_loss"] == r["heldout_loss_by_rate"]["4"] for r in evals)
    assert seen == [4, 8, 4, 8]  # the training steps
    model = RCCModel.from_pretrained(tmp_path / "run" / "final")
    assert (model.config.rate, model.config.trained_rates) == (4, [4, 8])
    config.slot_cache, config.train_encoder, config.out = 8, False, str(tmp_path / "cached")
    with pytest.raises(ValueError, match="one rate"):
        train(config)


def _contains(haystack: list[int], needle: list[int]) -> int:
    return next((i for i in range(len(haystack) - len(needle) + 1) if haystack[i:i + len(needle)] == needle), -1)


def test_qa_documents_are_hidden_in_real_text_at_varied_lengths_and_depths(smollm2_tokenizer):
    from rcc_model.data.qa import QAExample

    doc = "The access code for the signal tower is 48213."
    qa = [QAExample(doc, "What is the access code for the signal tower?", "48213", "fact")]
    ids = smollm2_tokenizer(doc, add_special_tokens=False)["input_ids"]
    eos = smollm2_tokenizer.eos_token_id
    stream = np.asarray(smollm2_tokenizer("Python's os module wraps the system calls of the platform. " * 200,
                                          add_special_tokens=False)["input_ids"], dtype=np.uint32)
    plain = objectives.question_answering(qa, smollm2_tokenizer, window=32, windows=4, reconstruct_instruction=0,
                                          haystack=stream, haystack_share=0.0, answer_end=eos)
    assert plain(random.Random(0)).context == ids

    hidden = objectives.question_answering(qa, smollm2_tokenizer, window=32, windows=4, reconstruct_instruction=0.5,
                                           haystack=stream, haystack_share=1.0, answer_end=eos)
    examples = [hidden(random.Random(seed)) for seed in range(40)]
    lengths = {len(e.context) for e in examples}
    depths = {_contains(e.context, ids) for e in examples}
    assert -1 not in depths and max(lengths) <= 32 * 4  # the document whole, within the budget
    assert len(lengths) > 10 and len(depths) > 10 and max(lengths) > 32 * 2
    assert all(e.target[-1] == eos for e in examples)


def test_qa_answers_end_with_the_token_generation_stops_at_whatever_the_tokenizer_calls_its_eos(text_rcc, tmp_path):
    """transformers 5.17 converts SmolLM2's GGUF with <|im_start|> as the tokenizer's EOS; stage 25, trained on
    such a conversion, ended every answer with that token, and read here it never stopped after an answer."""
    from rcc_model.data.qa import QAExample
    from rcc_model.decoding import answer_end_id, eos_token_ids

    data = tmp_path / "data"
    data.mkdir()
    TOKENS.tofile(data / "heldout.tokens")
    example = QAExample("The door is teal.", "What colour is the door?", "teal", "fact")
    (data / "qa-heldout.jsonl").write_text(json.dumps(example.to_dict()) + "\n")
    im_end = text_rcc.tokenizer.convert_tokens_to_ids("<|im_end|>")  # what SmolLM2's own configs name
    text_rcc.decoder.config.eos_token_id = text_rcc.decoder.generation_config.eos_token_id = im_end
    stops = eos_token_ids(text_rcc)
    text_rcc.tokenizer = copy.deepcopy(text_rcc.tokenizer)
    text_rcc.tokenizer.eos_token = "<|im_start|>"
    assert text_rcc.tokenizer.eos_token_id not in stops
    assert eos_token_ids(text_rcc) == stops and answer_end_id(text_rcc) in stops

    config = TrainConfig(data=str(data), out=str(tmp_path / "run"), window=32, objectives={"qa": 1.0})
    build = loop.build_objective(config, text_rcc, "heldout")
    assert {build(random.Random(seed)).target[-1] for seed in range(8)} <= stops


def test_qa_kind_weights_choose_what_is_asked(smollm2_tokenizer):
    from rcc_model.data.qa import NOT_IN_DOCUMENT, QAExample

    qa = [QAExample("The door is teal.", "What colour is the door?", "teal", "fact")] + [
        QAExample(f"Text {i}.", "What is the code?", NOT_IN_DOCUMENT, "not-in-document") for i in range(9)]
    answer = smollm2_tokenizer("teal", add_special_tokens=False)["input_ids"]

    def facts(kinds):
        build = objectives.question_answering(qa, smollm2_tokenizer, window=32, windows=1, reconstruct_instruction=0,
                                              kinds=kinds, answer_end=smollm2_tokenizer.eos_token_id)
        rng = random.Random(0)
        return sum(build(rng).target[:-1] == answer for _ in range(400))

    assert 15 < facts(None) < 70  # one example in ten
    assert facts({"fact": 1.0, "not-in-document": 0.0}) == 400
    assert 150 < facts({"fact": 1.0, "not-in-document": 1.0}) < 250
    with pytest.raises(ValueError, match="kinds"):
        objectives.question_answering(qa, smollm2_tokenizer, window=32, windows=1, reconstruct_instruction=0,
                                      kinds={"definition": 1.0}, answer_end=smollm2_tokenizer.eos_token_id)


def test_mixed_reading_puts_the_answer_in_the_text_in_the_slots_or_nowhere_as_its_cases_say(smollm2_tokenizer):
    from rcc_model.data.qa import NOT_IN_DOCUMENT, QAExample

    qa = [QAExample("Some words first. The gate code of the valley mill is 48213. More words follow.",
                    "What is the gate code of the valley mill?", "48213", "fact")]
    stream = np.asarray(smollm2_tokenizer("Python's os module wraps the system calls of the platform. " * 200,
                                          add_special_tokens=False)["input_ids"], dtype=np.uint32)
    eos = smollm2_tokenizer.eos_token_id
    answer, abstain = (smollm2_tokenizer(t, add_special_tokens=False)["input_ids"] + [eos]
                       for t in ("48213", NOT_IN_DOCUMENT))

    def where(cases):
        build = objectives.mixed_reading(qa, smollm2_tokenizer, stream, 32, cases, 2, 3, answer_end=eos)
        found = []
        for seed in range(30):
            example = build(random.Random(seed))
            assert example.context and len(example.context) % 32 == 0  # whole windows of slots
            assert len(example.context) <= 3 * 32
            text = smollm2_tokenizer.decode(example.prompt)
            assert text.rstrip().endswith("assistant") and "What is the gate code of the valley mill?" in text
            found.append(("48213" in text, "48213" in smollm2_tokenizer.decode(example.context),
                          example.target == answer, example.target == abstain))
        return set(found)

    assert where({"expanded": 1}) == {(True, False, True, False)}
    assert where({"compressed": 1}) == {(False, True, True, False)}
    assert where({"absent": 1}) == {(False, False, False, True)}
    assert len(where({"expanded": 1, "compressed": 1, "absent": 1})) == 3
    with pytest.raises(ValueError, match="cases"):
        objectives.mixed_reading(qa, smollm2_tokenizer, stream, 32, {"elsewhere": 1}, 2, 2, answer_end=eos)


def test_numbers_are_written_into_real_text_at_every_slot_offset_and_regenerated_whole(smollm2_tokenizer):
    stream = np.asarray(smollm2_tokenizer("Python's os module wraps the system calls of the platform. " * 200,
                                          add_special_tokens=False)["input_ids"], dtype=np.uint32)
    digit_ids = set(smollm2_tokenizer.convert_tokens_to_ids(list("0123456789")))
    build = objectives.numbers(stream, smollm2_tokenizer, window=64, per_window=(2, 4), digits=(3, 8))
    offsets, lengths = set(), set()
    for seed in range(40):
        e = build(random.Random(seed))
        assert len(e.context) == 64 and e.prompt == [] and e.target == e.context
        numbers = re.findall(r"\d+", smollm2_tokenizer.decode(e.context))
        assert 1 <= len(numbers) <= 4 and all(len(n) <= 8 for n in numbers)
        lengths.update(len(n) for n in numbers[:-1])  # the last may be cut by the window's end
        offsets.update(i % 4 for i, t in enumerate(e.context) if t in digit_ids)
        prose = [t for t in e.context if t not in digit_ids]  # the text around them, in order, minus the spaces
        assert _contains(stream.tolist(), [t for t in prose if smollm2_tokenizer.decode([t]) != " "][:20]) != -1
    assert offsets == {0, 1, 2, 3} and lengths >= {3, 5, 8}
