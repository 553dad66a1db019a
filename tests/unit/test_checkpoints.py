"""save_pretrained / from_pretrained over a local base folder, and the release importer."""

import pytest
import torch
from safetensors.torch import save_file

from rcc_model import MemoryMismatchError, RCCModel
from rcc_model.checkpoint import WEIGHTS_NAME, describe, own_rates
from tests.conftest import randomize_bridges, tiny_llama, tiny_neox
from tests.unit.test_modeling import random_ids


@pytest.fixture()
def base_dir(tmp_path):
    path = tmp_path / "base"
    tiny_llama().save_pretrained(path)
    return path


def test_save_then_load_gives_the_same_model(tmp_path, base_dir):
    model = randomize_bridges(RCCModel.from_base(str(base_dir), rate=4, window=16, dtype="float32",
                                                 memory_dtype="float32"))
    with torch.no_grad():
        model.decoder.model.layers[1].mlp.down_proj.weight.add_(0.01)
    model.save_pretrained(tmp_path / "ckpt")
    loaded = RCCModel.from_pretrained(tmp_path / "ckpt")
    assert loaded.fingerprint == model.fingerprint
    memory = model.compress(random_ids(40))
    assert loaded.generate_ids(memory, [1, 2], max_new_tokens=6) == model.generate_ids(memory, [1, 2],
                                                                                       max_new_tokens=6)


def test_a_checkpoint_read_at_another_rate_compresses_at_that_rate(tmp_path, base_dir):
    RCCModel.from_base(str(base_dir), rate=4, window=16, dtype="float32").save_pretrained(tmp_path / "c")
    model = RCCModel.from_pretrained(tmp_path / "c", rate=8)
    assert (model.config.rate, model.config.extra["trained_rate"]) == (8, 4)
    memory = model.compress(random_ids(32))
    assert (memory.rate, memory.num_slots) == (8, 4)
    with pytest.raises(ValueError, match="divide"):
        RCCModel.from_pretrained(tmp_path / "c", rate=5)


def test_a_multi_rate_checkpoint_loads_with_any_of_its_rates_as_the_default(tmp_path, base_dir):
    RCCModel.from_base(str(base_dir), rate=4, rates=[4, 8], window=16, dtype="float32").save_pretrained(tmp_path / "c")
    model = RCCModel.from_pretrained(tmp_path / "c", rate=8)
    assert (model.config.rate, model.config.trained_rates, model.config.extra) == (8, [4, 8], {})
    assert model.compress(random_ids(32), rate=4).num_slots == 8


def save_with_rate_weights(folder, base_dir) -> tuple[RCCModel, RCCModel]:
    """An r = 4 checkpoint holding weights of their own for r = 8 in `r8/` (other bridges: another model)."""
    r4 = randomize_bridges(RCCModel.from_base(str(base_dir), rate=4, window=16, dtype="float32"), seed=1)
    r8 = randomize_bridges(RCCModel.from_base(str(base_dir), rate=8, window=16, dtype="float32"), seed=2)
    r4.save_pretrained(folder)
    r8.save_pretrained(folder / "r8")
    return r4, r8


def test_weights_of_their_own_for_a_rate_load_with_that_rate(tmp_path, base_dir):
    r4, r8 = save_with_rate_weights(tmp_path / "c", base_dir)
    assert RCCModel.from_pretrained(tmp_path / "c").fingerprint == r4.fingerprint
    loaded = RCCModel.from_pretrained(tmp_path / "c", rate=8)
    assert (loaded.fingerprint, loaded.config.rate, loaded.config.extra) == (r8.fingerprint, 8, {})
    assert own_rates(tmp_path / "c") == [4, 8] and describe(tmp_path / "c")["rates"] == [4, 8]
    with pytest.raises(MemoryMismatchError):  # memory made by the r = 4 weights, read at 8 or not
        loaded.check_memory(r4.compress(random_ids(32)))


def test_saving_a_checkpoint_again_keeps_the_weights_of_its_other_rates(tmp_path, base_dir):
    r4, r8 = save_with_rate_weights(tmp_path / "c", base_dir)
    r4.save_pretrained(tmp_path / "c")
    assert RCCModel.from_pretrained(tmp_path / "c", rate=8).fingerprint == r8.fingerprint
    with pytest.raises(ValueError, match="weights of their own for rate 8"):
        r8.save_pretrained(tmp_path / "c")  # two weight sets for one rate
    assert RCCModel.from_pretrained(tmp_path / "c").fingerprint == r4.fingerprint


def test_a_rate_folder_holding_another_rate_is_a_clear_error(tmp_path, base_dir):
    RCCModel.from_base(str(base_dir), rate=4, window=16, dtype="float32").save_pretrained(tmp_path / "c")
    RCCModel.from_base(str(base_dir), rate=2, window=16, dtype="float32").save_pretrained(tmp_path / "c" / "r8")
    with pytest.raises(ValueError, match="rate 8 but its config says rate 2"):
        RCCModel.from_pretrained(tmp_path / "c", rate=8)


def test_checkpoints_store_bridges_and_changed_parameters_only(tmp_path, base_dir):
    model = RCCModel.from_base(str(base_dir), rate=4, window=16, dtype="float32")
    with torch.no_grad():
        model.encoder.model.layers[0].self_attn.q_proj.weight.add_(0.01)
    model.save_pretrained(tmp_path / "ckpt")
    from safetensors import safe_open

    with safe_open(str(tmp_path / "ckpt" / WEIGHTS_NAME), "pt") as f:
        keys = set(f.keys())
    assert keys == {"bridges.embed.weight", "bridges.layers.0.weight", "bridges.layers.1.weight",
                    "encoder.model.layers.0.self_attn.q_proj.weight"}


def test_a_checkpoint_without_tokenizer_files_works_on_token_ids(tmp_path, base_dir):
    RCCModel.from_base(str(base_dir), rate=4, window=16, dtype="float32").save_pretrained(tmp_path / "c")
    model = RCCModel.from_pretrained(tmp_path / "c")
    assert model.tokenizer is None
    assert len(model.generate_ids(model.compress(random_ids(20)), [3], max_new_tokens=3)) == 3


def test_a_checkpoint_for_another_base_is_refused(tmp_path, base_dir):
    RCCModel.from_base(str(base_dir), rate=4, window=16).save_pretrained(tmp_path / "c")
    tiny_llama(seed=9).save_pretrained(base_dir)  # the base folder now holds different weights
    with pytest.raises(ValueError, match="not the one this checkpoint was trained on"):
        RCCModel.from_pretrained(tmp_path / "c")


def test_weights_of_the_wrong_shape_are_refused(tmp_path, base_dir):
    RCCModel.from_base(str(base_dir), rate=4, window=16).save_pretrained(tmp_path / "c")
    save_file({"bridges.embed.weight": torch.zeros(8, 8)}, str(tmp_path / "c" / WEIGHTS_NAME))
    with pytest.raises(ValueError, match="wrong checkpoint"):
        RCCModel.from_pretrained(tmp_path / "c")


def test_a_corrupted_weights_file_is_a_clear_error(tmp_path, base_dir):
    RCCModel.from_base(str(base_dir), rate=4, window=16).save_pretrained(tmp_path / "c")
    (tmp_path / "c" / WEIGHTS_NAME).write_bytes(b"not safetensors")
    with pytest.raises(ValueError, match="corrupted"):
        RCCModel.from_pretrained(tmp_path / "c")


def test_an_unknown_model_name_is_a_clear_error():
    with pytest.raises(FileNotFoundError, match="neither a packaged RCC model"):
        RCCModel.from_pretrained("no-such-model")


def test_an_unknown_base_explains_that_nothing_is_downloaded():
    with pytest.raises(ValueError, match="cannot be fetched from a hub"):
        RCCModel.from_base("someone/some-model")


# ---------------------------------------------------------------------------------------------- release
RATE, WINDOW = 4, 16


def save_release_layout(path, decoder, encoder, embed_bridge, layer_bridges):
    """A tiny GPT-NeoX RCC saved with the release's key names (transformers 4.40 GPT-NeoX layout)."""
    state = {}
    for k, v in decoder.state_dict().items():
        state["embed_out.weight" if k == "lm_head.weight" else k] = v
    for k, v in encoder.state_dict().items():
        state["gpt_neox.rcc_encoder." + ("embed_out.weight" if k == "lm_head.weight" else k)] = v
    state["gpt_neox.embed_out.weight"] = torch.zeros_like(decoder.lm_head.weight)  # unused in the release
    state["gpt_neox.rcc_encoder2gpt_embed.weight"] = embed_bridge
    for i, w in enumerate(layer_bridges):
        state[f"gpt_neox.rcc_encoder2gpt_A_matrix.{i}.weight"] = w
    path.mkdir()
    decoder.config.save_pretrained(path)
    save_file({k: v.contiguous() for k, v in state.items()}, str(path / "model.safetensors"))


def reference_release_forward(decoder, encoder, embed_bridge, layer_bridges, context, prompt):
    """The method doc, written out independently of rcc_model: tile to whole windows, take the state of the
    last token of each r-block from every hidden-state entry, replace slot embeddings by B_embed(E_0), and
    add B_i(E_{i+1}) to the slots at the input of layer i+1 (for the last layer: at the final norm)."""
    if len(context) < WINDOW:
        context = (context * (WINDOW // len(context) + 1))[-WINDOW:]
    else:
        context = context[len(context) - (-len(context) % WINDOW):] + context if len(context) % WINDOW else context
    windows = [context[i:i + WINDOW] for i in range(0, len(context), WINDOW)]
    entries = []
    for w in windows:
        hs = encoder.gpt_neox(input_ids=torch.tensor([w]), output_hidden_states=True).hidden_states
        entries.append(torch.stack([h[0, RATE - 1::RATE] for h in hs], dim=1))  # (W/r, L+1, H)
    slots = torch.cat(entries)  # (S, L+1, H)
    num = slots.shape[0]
    embeds = torch.cat([slots[:, 0] @ embed_bridge.T, decoder.gpt_neox.embed_in(torch.tensor(prompt))])[None]
    targets = [*list(decoder.gpt_neox.layers)[1:], decoder.gpt_neox.final_layer_norm]
    handles = []
    for i, module in enumerate(targets):
        add = slots[:, i + 1] @ layer_bridges[i].T

        def pre_hook(mod, args, kwargs, add=add):
            h = args[0] if args else kwargs["hidden_states"]
            h = torch.cat([h[:, :num] + add, h[:, num:]], 1)
            return ((h, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": h})

        handles.append(module.register_forward_pre_hook(pre_hook, with_kwargs=True))
    try:
        return decoder(inputs_embeds=embeds).logits
    finally:
        for h in handles:
            h.remove()


@pytest.mark.parametrize("context_length", [7, 16, 37])
def test_release_import_reproduces_the_release_forward(tmp_path, context_length):
    decoder, encoder = tiny_neox(seed=1), tiny_neox(seed=2)
    torch.manual_seed(3)
    embed_bridge = torch.randn(32, 32) * 0.2
    layer_bridges = [torch.randn(32, 32) * 0.2 for _ in range(2)]
    save_release_layout(tmp_path / "release", decoder, encoder, embed_bridge, layer_bridges)

    model = RCCModel.from_official(tmp_path / "release", rate=RATE, window=WINDOW, dtype="float32", device="cpu")
    assert model.config.padding == "tile"
    context, prompt = random_ids(context_length, seed=context_length), [4, 5, 6]
    memory = model.compress(context)
    ours = model.decode(memory.states[None], torch.ones(1, memory.num_slots, dtype=torch.long),
                        torch.tensor([prompt]), torch.ones(1, 3, dtype=torch.long)).logits
    reference = reference_release_forward(decoder, encoder, embed_bridge, layer_bridges, context, prompt)
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)


def test_release_import_rejects_a_checkpoint_with_missing_keys(tmp_path):
    decoder, encoder = tiny_neox(seed=1), tiny_neox(seed=2)
    save_release_layout(tmp_path / "release", decoder, encoder, torch.eye(32), [torch.zeros(32, 32)])
    with pytest.raises(ValueError, match="lacks bridge weights"):
        RCCModel.from_official(tmp_path / "release", rate=RATE, window=WINDOW, dtype="float32", device="cpu")


def test_every_dtype_argument_takes_a_torch_dtype_or_its_name(tmp_path, base_dir):
    from rcc_model.config import dtype_name

    assert [dtype_name(d) for d in (torch.float32, torch.half, "bfloat16", "auto")] == [
        "float32", "float16", "bfloat16", "auto"]
    with pytest.raises(TypeError, match="torch dtype or its name"):
        dtype_name(32)
    model = RCCModel.from_base(str(base_dir), rate=4, window=16, dtype=torch.float32, memory_dtype=torch.float32)
    assert (model.config.dtype, model.config.memory_dtype) == ("float32", "float32")
    assert model.decoder.dtype == torch.float32
    model.save_pretrained(tmp_path / "ckpt", dtype="bfloat16")
    loaded = RCCModel.from_pretrained(tmp_path / "ckpt", dtype=torch.bfloat16)
    assert loaded.decoder.dtype == torch.bfloat16 and loaded.config.dtype == "float32"  # the checkpoint's own
    assert RCCModel.from_pretrained(tmp_path / "ckpt", dtype="float32").decoder.dtype == torch.float32
