"""Exact-resume training state in safetensors + JSON (no pickle): trained weights, optimizer moments, step."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from rcc_model.atomic import atomic_folder, recover
from rcc_model.checkpoint import load_trained_state


def save_training_state(folder: Path, model, optimizer: torch.optim.Optimizer, step: int, accelerator) -> None:
    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        return
    with atomic_folder(folder, "rcc-training-state", accepts=lambda f: (f / "state.json").is_file()) as tmp:
        weights = {k: v.detach().cpu().contiguous() for k, v in model.trained_state_dict().items()}
        save_file(weights, str(tmp / "weights.safetensors"))
        optim = optimizer.state_dict()
        tensors, scalars = {}, {}
        for index, slots in optim["state"].items():
            for key, value in slots.items():
                if torch.is_tensor(value):
                    tensors[f"{index}.{key}"] = value.detach().cpu().contiguous()
                else:
                    scalars[f"{index}.{key}"] = value
        save_file(tensors, str(tmp / "optimizer.safetensors"))
        meta = {"step": step, "param_groups": optim["param_groups"], "scalars": scalars}
        (tmp / "state.json").write_text(json.dumps(meta))


def load_training_state(folder: Path, model, optimizer: torch.optim.Optimizer) -> int:
    """Restore weights and optimizer from `folder`; returns the step to continue from."""
    recover(folder)
    meta = json.loads((folder / "state.json").read_text())
    load_trained_state(model, load_file(str(folder / "weights.safetensors")), source=str(folder))
    state: dict[int, dict] = {}
    for key, value in load_file(str(folder / "optimizer.safetensors")).items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    for key, value in meta["scalars"].items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    return int(meta["step"])
