"""Exact-resume training state in safetensors + JSON (no pickle): trained weights, optimizer moments, step.

Under FSDP every process holds a shard of each parameter and of its optimizer moments: saving gathers them whole
(a collective, so every process calls it) and the main process writes the same files one process would; resuming
loads the weights before the model is sharded and scatters the moments after.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch.distributed.tensor import DTensor, distribute_tensor

from rcc_model.atomic import atomic_folder, recover
from rcc_model.checkpoint import load_trained_state


def _whole(tensor: torch.Tensor) -> torch.Tensor:
    """A CPU copy of the full tensor; for a sharded (FSDP) one an all-gather every process must join."""
    if isinstance(tensor, DTensor):
        tensor = tensor.full_tensor()
    return tensor.detach().cpu().contiguous()


def save_training_state(folder: Path, model, optimizer: torch.optim.Optimizer, step: int, accelerator,
                        sharded_names: set[str] | None = None) -> None:
    """Write the trained weights, the optimizer and `step`, atomically. `sharded_names`: under FSDP, the names of
    the parameters that train (the model cannot tell them from its base once sharded)."""
    if sharded_names is None:
        weights = model.trained_state_dict()
    else:
        weights = {name: param for name, param in model.named_parameters() if name in sharded_names}
    weights = {name: _whole(tensor) for name, tensor in weights.items()}
    optim = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, slots in optim["state"].items():
        for key, value in slots.items():
            if torch.is_tensor(value):
                tensors[f"{index}.{key}"] = _whole(value)
            else:
                scalars[f"{index}.{key}"] = value
    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        return
    with atomic_folder(folder, "rcc-training-state", accepts=lambda f: (f / "state.json").is_file()) as tmp:
        save_file(weights, str(tmp / "weights.safetensors"))
        save_file(tensors, str(tmp / "optimizer.safetensors"))
        meta = {"step": step, "param_groups": optim["param_groups"], "scalars": scalars}
        (tmp / "state.json").write_text(json.dumps(meta))


def load_training_weights(folder: Path, model) -> int:
    """Restore the trained weights from `folder` (before the model is sharded or wrapped); returns the step to
    continue from."""
    recover(folder)
    meta = json.loads((folder / "state.json").read_text())
    load_trained_state(model, load_file(str(folder / "weights.safetensors")), source=str(folder))
    return int(meta["step"])


def load_optimizer_state(folder: Path, optimizer: torch.optim.Optimizer) -> None:
    """Restore the optimizer from `folder` (after `accelerate` prepared it: a sharded parameter gets the shard of
    each moment that matches its own)."""
    meta = json.loads((folder / "state.json").read_text())
    params = [p for group in optimizer.param_groups for p in group["params"]]
    state: dict[int, dict] = {}
    for key, value in load_file(str(folder / "optimizer.safetensors")).items():
        index, name = key.split(".", 1)
        param = params[int(index)]
        if isinstance(param, DTensor) and value.shape == param.shape:
            value = distribute_tensor(value.to(param.device), param.device_mesh, param.placements)
        state.setdefault(int(index), {})[name] = value
    for key, value in meta["scalars"].items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
