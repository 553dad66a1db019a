"""Slot states of a frozen encoder, computed once and read back at every step (`TrainConfig.slot_cache`).

With the encoder frozen, the slot states of a window never change, so encoding it again at every step is
wasted work. The cache holds the first `count` aligned windows of the token stream (row i = tokens
[i*W, (i+1)*W)), in bf16 safetensors shards of `SHARD` windows that are written atomically, so a build that is
interrupted resumes at the first missing shard. Size: W/r slots x (layers + 1) x hidden x 2 bytes per window
(2.3 MB for the SmolLM2 default at W = 256, r = 4).

The cache is bound to the encoder that made it (base, rate, window and a hash of the encoder's trained
weights): a run whose encoder differs rebuilds it rather than training on another model's states.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm.auto import tqdm

from rcc_model.atomic import atomic_file
from rcc_model.modeling import RCCModel, weights_digest

SHARD = 256


def encoder_fingerprint(model: RCCModel) -> str:
    """Identity of what the encoder computes: the base plus a hash of its trained (changed) weights."""
    encoder = {k: v for k, v in model.trained_state_dict().items() if k.startswith("encoder.")}
    return f"{model.config.base_fingerprint}-{weights_digest(encoder)}"


def _shard_path(folder: Path, first: int) -> Path:
    return folder / f"shard-{first // SHARD:05d}.safetensors"


class SlotCache:
    """Read-only view of a built cache (`build_slot_cache`): `rows(indices)` -> (N, W/r, K, H) slot states."""

    def __init__(self, folder: Path, count: int):
        self.count = count
        self._shards = [safe_open(str(_shard_path(folder, first)), framework="pt").get_slice("states")
                        for first in range(0, count, SHARD)]

    def rows(self, indices: list[int]) -> torch.Tensor:
        if any(not 0 <= i < self.count for i in indices):
            raise IndexError(f"slot cache rows must be in [0, {self.count}), got {indices}")
        return torch.cat([self._shards[i // SHARD][i % SHARD:i % SHARD + 1] for i in indices])


def build_slot_cache(model: RCCModel, tokens: np.ndarray, count: int, folder: Path,
                     batch_size: int = 8) -> SlotCache:
    """Encode the first `count` aligned windows of `tokens` into `folder` (reusing the shards already there
    for this encoder) and open the cache."""
    cfg = model.config
    available = len(tokens) // cfg.window
    if not 0 < count <= available:
        raise ValueError(f"slot_cache must be between 1 and {available} (aligned windows in the split), "
                         f"got {count}")
    identity = {"encoder": encoder_fingerprint(model), "rate": cfg.rate, "window": cfg.window,
                "tokens": len(tokens), "shard": SHARD}
    folder.mkdir(parents=True, exist_ok=True)
    meta = folder / "cache.json"
    if not meta.is_file() or json.loads(meta.read_text()) != identity:
        for old in folder.glob("shard-*.safetensors"):  # another encoder's states: never mix them
            old.unlink()
        meta.write_text(json.dumps(identity))
    model.encoder.eval()
    for first in tqdm(range(0, count, SHARD), desc="caching slot states", unit="shard"):
        path = _shard_path(folder, first)
        if path.is_file():
            continue
        rows = range(first, min(first + SHARD, available))  # whole shards, so a larger count reuses them
        parts = []
        with torch.no_grad():
            for start in range(0, len(rows), batch_size):
                ids = torch.stack([torch.from_numpy(tokens[r * cfg.window:(r + 1) * cfg.window].astype(np.int64))
                                   for r in rows[start:start + batch_size]])
                states = model.encode_windows(ids.to(model.device), [cfg.window] * len(ids))  # (b, W/r, K, H)
                parts.append(states.to(torch.bfloat16).cpu())
        with atomic_file(path) as tmp:
            save_file({"states": torch.cat(parts).contiguous()}, str(tmp))
    return SlotCache(folder, count)
