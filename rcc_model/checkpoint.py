"""Checkpoints: config + bridges + trained parameters in safetensors, never the base weights.

A folder holds `rcc_config.json`, `rcc_weights.safetensors` and, when the model has one, the tokenizer. It may
also hold weights of their own for another rate, as a checkpoint in a subfolder `r<rate>` (e.g. `r8/`, written by
`save_pretrained(folder / "r8")` or `rcc train CONFIG --export folder/r8`): one set of weights reads one rate best
(the encoder cannot tell rates apart), so `from_pretrained(folder, rate=8)` loads `r8/`.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from rcc_model.atomic import atomic_folder, recover
from rcc_model.config import CONFIG_NAME, RCCConfig

WEIGHTS_NAME = "rcc_weights.safetensors"
KIND = "rcc-checkpoint"
PACKAGED = Path(__file__).parent / "pretrained"


def resolve_checkpoint(name_or_path: str | Path) -> Path:
    """A packaged name (a folder under rcc_model/pretrained) or a checkpoint folder."""
    packaged = PACKAGED / str(name_or_path)
    if isinstance(name_or_path, str) and (packaged / CONFIG_NAME).is_file():
        return packaged
    path = Path(name_or_path).expanduser()
    recover(path)  # a save interrupted after it committed is finished before anything is read
    if (path / CONFIG_NAME).is_file():
        return path
    names = sorted(p.name for p in PACKAGED.iterdir() if (p / CONFIG_NAME).is_file())
    raise FileNotFoundError(
        f"{name_or_path!r} is neither a packaged RCC model ({', '.join(names)}) nor a folder with {CONFIG_NAME}"
    )


def rate_folders(folder: Path) -> dict[int, Path]:
    """The subfolders of a checkpoint folder that hold weights of their own for one rate, by rate."""
    if not folder.is_dir():
        return {}
    return {int(p.name[1:]): p for p in folder.iterdir()
            if p.name[:1] == "r" and p.name[1:].isdigit() and (p / CONFIG_NAME).is_file()}


def own_rates(name_or_path: str | Path) -> list[int]:
    """Every rate a packaged model or checkpoint was trained at, with the same weights or weights of their own."""
    folder = resolve_checkpoint(name_or_path)
    return sorted({*RCCConfig.load(folder).trained_rates, *rate_folders(folder)})


def save_checkpoint(model, directory: str | Path, dtype: torch.dtype | None = None) -> Path:
    """Write the checkpoint's files into `directory` atomically as a whole (`atomic.atomic_folder`), so a crash
    leaves the previous checkpoint or the new one; no other file there is touched, and a non-empty folder that
    holds no checkpoint is refused. Weights of their own for other rates (`r<rate>/` subfolders) are kept; one
    for a rate this model reads is refused, as two weight sets for one rate would leave which one loads to
    chance."""
    directory = Path(directory)
    kept = rate_folders(directory)
    clash = sorted(set(kept) & set(model.config.trained_rates))
    if clash:
        raise ValueError(f"{directory} holds weights of their own for rate {clash[0]} ({kept[clash[0]].name}/) and "
                         f"this model reads that rate too: save it elsewhere or remove {kept[clash[0]]} first")
    with atomic_folder(directory, KIND, accepts=_older_checkpoint) as tmp:
        model.config.save(tmp)
        state = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).detach().cpu().contiguous()
                 for k, v in model.trained_state_dict().items()}
        save_file(state, str(tmp / WEIGHTS_NAME), metadata={"format": "rcc-checkpoint",
                                                             "fingerprint": model.fingerprint})
        if model.tokenizer is not None:
            model.tokenizer.save_pretrained(tmp)
    return directory


def _older_checkpoint(folder: Path) -> bool:
    """A folder an older rcc saved a checkpoint into (no journal), or one holding only rates' own weights."""
    return (folder / CONFIG_NAME).is_file() or all(p in rate_folders(folder).values() for p in folder.iterdir())


def load_checkpoint(cls, name_or_path, *, dtype=None, device=None, device_map=None, cache_dir=None, rate=None):
    parent = resolve_checkpoint(name_or_path)
    folder = rate_folders(parent).get(rate, parent)  # a rate's own weights, where the checkpoint has them
    recover(folder)
    config = RCCConfig.load(folder)
    if folder != parent and config.rate != rate:
        raise ValueError(f"{folder} should hold weights for rate {rate} but its config says rate {config.rate}")
    if rate in config.trained_rates:  # one of its own rates as the default
        config = RCCConfig.from_dict({**config.to_dict(), "rate": rate})
    elif rate is not None:  # a rate it was never trained at: marked, for the BLEU-vs-rate measurement
        config = RCCConfig.from_dict({**config.to_dict(), "rate": rate, "rates": None,
                                      "extra": {**config.extra, "trained_rate": config.rate}})
    model = cls._build(config, device=device, device_map=device_map, cache_dir=cache_dir, dtype=dtype)
    weights = folder / WEIGHTS_NAME
    if weights.is_file():
        try:
            state = load_file(str(weights))
        except (SafetensorError, OSError) as e:
            raise ValueError(f"{weights} is not a readable safetensors file (corrupted?): {e}") from e
        load_trained_state(model, state, source=str(weights))
    from rcc_model import bases

    tokenizer = bases.load_tokenizer(folder)
    if tokenizer is None and folder != parent:  # a rate's own weights use their checkpoint's tokenizer
        tokenizer = bases.load_tokenizer(parent)
    if tokenizer is not None:
        model.tokenizer = tokenizer
    return model


def load_trained_state(model, state: dict[str, torch.Tensor], source: str) -> None:
    """Copy bridges and trained parameters into `model`, refusing any key or shape it does not have."""
    params = dict(model.named_parameters())
    missing = sorted(k for k in params if k.startswith("bridges.") and k not in state)
    unknown = sorted(k for k in state if k not in params)
    wrong = sorted(k for k in state if k in params and tuple(state[k].shape) != tuple(params[k].shape))
    if missing or unknown or wrong:
        raise ValueError(
            f"{source} does not fit this model (wrong checkpoint or base?): "
            f"missing {missing[:5]}, unexpected {unknown[:5]}, wrong shapes {wrong[:5]}"
        )
    with torch.no_grad():
        for name, tensor in state.items():
            params[name].copy_(tensor.to(params[name].dtype))


@lru_cache(maxsize=8)
def load_tokenizer_only(name_or_path: str | Path):
    """The tokenizer of a packaged model or checkpoint folder (its own, else its base's), without weights;
    loaded once per name."""
    from rcc_model import bases

    folder = resolve_checkpoint(name_or_path)
    tokenizer = bases.load_tokenizer(folder)
    if tokenizer is None:
        tokenizer = bases.load_tokenizer(bases.resolve_base(RCCConfig.load(folder).base))
    return tokenizer


def describe(name_or_path: str | Path) -> dict:
    """Rate, every rate it reads (`rates`), window and the decoder's position limit of a packaged model or
    checkpoint, from its configs alone (no weights loaded)."""
    import json

    from rcc_model import bases

    folder = resolve_checkpoint(name_or_path)
    config = RCCConfig.load(folder)
    base = json.loads((bases.resolve_base(config.base) / "config.json").read_text())
    return {"rate": config.rate, "rates": own_rates(folder), "window": config.window, "base": config.base,
            "max_positions": int(base.get("max_position_embeddings", 2048))}
