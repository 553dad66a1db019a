"""Importer for the paper's released checkpoint (`RCC_Ins_Reconstruction`, Pythia-1.4b, r = 32, W = 2048).

The release stores encoder, decoder and bridges in one GPT-NeoX state dict (transformers 4.40 names):
decoder `gpt_neox.*` + `embed_out.weight`, encoder under `gpt_neox.rcc_encoder.`, bridges
`gpt_neox.rcc_encoder2gpt_embed.weight` and `gpt_neox.rcc_encoder2gpt_A_matrix.{i}.weight`; an unused
`gpt_neox.embed_out.weight` is tolerated.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open

from rcc_model import bases
from rcc_model.config import RCCConfig

ENCODER_PREFIX = "gpt_neox.rcc_encoder."
EMBED_BRIDGE = "gpt_neox.rcc_encoder2gpt_embed.weight"
LAYER_BRIDGE = "gpt_neox.rcc_encoder2gpt_A_matrix."
TOLERATED = {"gpt_neox.embed_out.weight"}


def read_release_state(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of a (possibly sharded) safetensors checkpoint folder."""
    index = path / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    else:
        files = sorted(p.name for p in path.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no safetensors weights in {path}")
    state: dict[str, torch.Tensor] = {}
    for name in files:
        with safe_open(str(path / name), framework="pt") as f:
            for key in f.keys():  # noqa: SIM118 (safe_open is not a dict)
                state[key] = f.get_tensor(key)
    return state


def _to_stock_names(state: dict[str, torch.Tensor], model) -> dict[str, torch.Tensor]:
    """Rename the release's `embed_out.weight` LM head to the stock model's current head name."""
    head = next(n for n, p in model.named_parameters() if p is model.get_output_embeddings().weight)
    return {(head if k == "embed_out.weight" else k): v for k, v in state.items()}


def _load_strict(model, state: dict[str, torch.Tensor], part: str) -> None:
    expected = set(model.state_dict())
    state = _to_stock_names(state, model)
    missing = sorted(k for k in expected - set(state) if "rotary_emb" not in k and "masked_bias" not in k)
    unexpected = sorted(set(state) - expected)
    if missing or unexpected:
        raise ValueError(f"release checkpoint {part} does not match GPT-NeoX: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")
    model.load_state_dict(state, strict=False)


def load_official(cls, path: str | Path, *, rate: int, window: int, dtype: str | torch.dtype, device=None):
    from transformers import AutoConfig, AutoModelForCausalLM

    path = Path(path)
    base_config = AutoConfig.from_pretrained(str(path))
    if base_config.model_type != "gpt_neox":
        raise ValueError(f"the release is a GPT-NeoX checkpoint; {path} holds {base_config.model_type!r}")
    target = torch.device(device) if device is not None else bases.default_device()
    torch_dtype = bases.resolve_dtype(dtype, target)
    state = read_release_state(path)
    num_layers = base_config.num_hidden_layers

    encoder_state = {k[len(ENCODER_PREFIX):]: v for k, v in state.items() if k.startswith(ENCODER_PREFIX)}
    bridge_keys = {EMBED_BRIDGE} | {f"{LAYER_BRIDGE}{i}.weight" for i in range(num_layers)}
    missing_bridges = sorted(bridge_keys - set(state))
    if missing_bridges:
        raise ValueError(f"release checkpoint lacks bridge weights {missing_bridges[:5]}")
    decoder_state = {k: v for k, v in state.items()
                     if not k.startswith(ENCODER_PREFIX) and k not in bridge_keys and k not in TOLERATED}

    encoder = AutoModelForCausalLM.from_config(base_config, dtype=torch_dtype)
    decoder = AutoModelForCausalLM.from_config(base_config, dtype=torch_dtype)
    _load_strict(encoder, encoder_state, "encoder")
    _load_strict(decoder, decoder_state, "decoder")
    config = RCCConfig(base=str(path), rate=rate, window=window, padding="tile", dtype=dtype,
                       bridge_init="normal", memory_dtype="bfloat16" if torch_dtype == torch.bfloat16
                       else "float32")
    model = cls(config, encoder.eval().to(target), decoder.eval().to(target), bases.load_tokenizer(path))
    with torch.no_grad():
        model.bridges.embed.weight.copy_(state[EMBED_BRIDGE])
        for i, layer in enumerate(model.bridges.layers):
            layer.weight.copy_(state[f"{LAYER_BRIDGE}{i}.weight"])
    return model
