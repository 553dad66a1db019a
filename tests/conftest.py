"""Shared fixtures: tiny random models built from configs (no download) and the real SmolLM2 base."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from rcc_model import RCCConfig, RCCModel

VOCAB = 99
TOKENS = np.random.default_rng(0).integers(0, VOCAB, 5000).astype(np.uint32)  # a random training stream


_TINY = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
             max_position_embeddings=256, eos_token_id=None, bos_token_id=None, pad_token_id=None)


def _tiny(config_class, model_class, **overrides):
    """A builder of tiny random models of one architecture (transformers' model-tester sizes)."""

    def build(vocab_size: int = VOCAB, seed: int = 0, **more):
        torch.manual_seed(seed)
        config = config_class(**{**_TINY, "vocab_size": vocab_size, **overrides, **more})
        return model_class(config).eval()

    return build


tiny_llama = _tiny(LlamaConfig, LlamaForCausalLM)
tiny_neox = _tiny(GPTNeoXConfig, GPTNeoXForCausalLM, rotary_pct=0.25)

BUILDERS = {
    "llama": tiny_llama,
    "neox": tiny_neox,
    "qwen2": _tiny(Qwen2Config, Qwen2ForCausalLM),
    "mistral": _tiny(MistralConfig, MistralForCausalLM, sliding_window=None),
    "gpt2": _tiny(GPT2Config, GPT2LMHeadModel, n_embd=32, n_layer=2, n_head=4, n_positions=256),
}


def make_rcc(arch: str = "llama", rate: int = 4, window: int = 16, bridge_init: str = "identity",
             seed: int = 0, **config_kwargs) -> RCCModel:
    base = BUILDERS[arch](seed=seed)
    config = RCCConfig(base=f"tiny-{arch}", rate=rate, window=window, dtype="float32",
                       memory_dtype="float32", bridge_init=bridge_init, **config_kwargs)
    torch.manual_seed(seed + 1)
    return RCCModel(config, base, copy.deepcopy(base))


def randomize_bridges(model: RCCModel, seed: int = 0, std: float = 0.05) -> RCCModel:
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.bridges.parameters():
            p.add_(torch.randn_like(p) * std)
    return model


def pytest_configure(config) -> None:
    """Under pytest-xdist the workers share the CPU: one torch thread each, and in the processes they start, since
    two processes with a thread per core each slow each other several times over."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ["OMP_NUM_THREADS"] = "1"
        torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _memory_cache(tmp_path_factory, monkeypatch) -> Path:
    """Every test's memory cache (an index's default `storage="text"`) in a folder of its own, never the user's."""
    folder = tmp_path_factory.mktemp("memory-cache")
    monkeypatch.setenv("RCC_MEMORY_CACHE", str(folder))
    return folder


@pytest.fixture(params=["llama", "neox"])
def arch(request) -> str:
    """The two architecture families every invariant is checked on."""
    return request.param


@pytest.fixture(params=["llama", "mistral", "neox", "qwen2"])
def rotary_arch(request) -> str:
    """Architectures whose embedding-level state carries no position (rotary positions)."""
    return request.param


@pytest.fixture(scope="session")
def smollm2_dir():
    """The real SmolLM2-135M-Instruct base as an HF folder, converted once into the user cache."""
    from rcc_model.bases import resolve_base

    return resolve_base("smollm2-135m-instruct")


@pytest.fixture(scope="session")
def smollm2_tokenizer(smollm2_dir):
    from rcc_model.bases import load_tokenizer

    return load_tokenizer(smollm2_dir)


@pytest.fixture()
def text_rcc(smollm2_tokenizer) -> RCCModel:
    """A tiny random Llama with SmolLM2's real tokenizer: fast, and exercises every text path."""
    base = tiny_llama(vocab_size=len(smollm2_tokenizer), max_position_embeddings=1024)
    config = RCCConfig(base="tiny-llama-smollm2-vocab", rate=4, window=32, dtype="float32",
                       memory_dtype="float32")
    return RCCModel(config, base, copy.deepcopy(base), smollm2_tokenizer)


@pytest.fixture()
def rate_weights_checkpoint(smollm2_tokenizer, tmp_path) -> tuple[str, dict[int, str]]:
    """A checkpoint folder of a tiny RCC with SmolLM2's tokenizer: weights for r = 4, and weights of their own for
    r = 8 in `r8/`; with each rate's fingerprint."""
    base_dir = tmp_path / "base"
    tiny_llama(vocab_size=len(smollm2_tokenizer), max_position_embeddings=1024).save_pretrained(base_dir)
    smollm2_tokenizer.save_pretrained(base_dir)
    folder, fingerprints = tmp_path / "checkpoint", {}
    for rate, path in ((4, folder), (8, folder / "r8")):
        model = randomize_bridges(RCCModel.from_base(str(base_dir), rate=rate, window=32, dtype="float32"), seed=rate)
        model.save_pretrained(path)
        fingerprints[rate] = model.fingerprint
    return str(folder), fingerprints


@pytest.fixture()
def tiny_checkpoint(rate_weights_checkpoint) -> str:
    """A tiny RCC checkpoint folder with SmolLM2's tokenizer (and its own `r8/` weights)."""
    return rate_weights_checkpoint[0]


WORDS = ["river", "stone", "lantern", "orchard", "copper", "violet", "harbour", "meadow", "signal", "winter"]


def corpus_text(seed: int, words: int) -> str:
    return " ".join(WORDS[(seed * 7 + i * 3) % len(WORDS)] for i in range(words)) + f" code {seed * 1013}."


@pytest.fixture()
def corpus_dir(tmp_path) -> Path:
    """A corpus folder: six text files (two levels), and a hidden, a binary and a blank file it skips."""
    folder = tmp_path / "docs"
    (folder / "sub").mkdir(parents=True)
    for i in range(6):
        (folder / ("sub" if i % 2 else ".") / f"doc{i}.txt").write_text(corpus_text(i, 20 + 15 * i))
    (folder / ".hidden.txt").write_text("never read")
    (folder / "image.bin").write_bytes(b"\xff\xfe\x00\x81" * 10)
    (folder / "blank.txt").write_text("  \n")
    return folder


@pytest.fixture()
def run_config(tmp_path):
    """A training config of a tiny Llama on random tokens: four steps, checkpoints every two."""
    data = tmp_path / "data"
    data.mkdir()
    TOKENS.tofile(data / "train.tokens")
    TOKENS[::-1].copy().tofile(data / "heldout.tokens")
    tiny_llama().save_pretrained(tmp_path / "base")
    config = {"data": "data", "out": "run", "base": str(tmp_path / "base"), "rate": 4, "window": 16, "span": 8,
              "cue": 2, "batch_size": 2, "steps": 4, "warmup": 2, "eval_every": 2, "eval_batches": 1,
              "save_every": 2, "log_every": 1, "trainable": "bridges+lora", "lora": {"r": 2, "alpha": 4},
              "precision": "no", "lr": 0.01,
              "objectives": {"reconstruction": 1, "continuation": 1, "long_context": 1}}
    (tmp_path / "run.json").write_text(json.dumps(config))
    return tmp_path / "run.json"
