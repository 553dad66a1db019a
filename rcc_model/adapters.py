"""Low-rank adapters (peft's LoRA) injected into the stock encoder and decoder modules in place."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from torch import nn

DEFAULT_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj",
                   "query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"]


def add_lora(model, spec: dict[str, Any]) -> None:
    """Wrap the targeted linear layers of `model.encoder` / `model.decoder` with LoRA (B = 0: no change yet)."""
    try:
        from peft import LoraConfig, inject_adapter_in_model
    except ModuleNotFoundError as e:
        raise ModuleNotFoundError("LoRA adapters need peft: pip install 'rcc[train]'") from e

    for part in ("encoder", "decoder"):
        if not spec.get(part, True):
            continue
        module = getattr(model, part)
        present = {name.rsplit(".", 1)[-1] for name, _ in module.named_modules()}
        targets = [t for t in spec.get("targets") or DEFAULT_TARGETS if t in present]
        if not targets:
            raise ValueError(f"none of the LoRA targets {spec.get('targets')} exist in the {part}")
        config = LoraConfig(r=int(spec["r"]), lora_alpha=int(spec.get("alpha", 2 * spec["r"])),
                            target_modules=targets, lora_dropout=0.0)
        inject_adapter_in_model(config, module)
    model.to(model.device)


@contextmanager
def adapters_disabled(module: nn.Module) -> Iterator[None]:
    """Run `module` as its base model: every LoRA layer in it bypassed for the duration (a no-op without LoRA)."""
    layers = [m for m in module.modules() if hasattr(m, "lora_A")]
    for layer in layers:
        layer._disable_adapters = True
    try:
        yield
    finally:
        for layer in layers:
            layer._disable_adapters = False
