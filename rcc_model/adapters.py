"""Low-rank adapters (peft's LoRA) injected into the stock encoder and decoder modules in place."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from contextvars import ContextVar
from typing import Any

import torch

# Set inside `adapters_disabled()`: a context variable, not a flag on the shared modules, so a call without
# adapters in one thread never switches them off for a call running in another (as with slot injection).
_BASE_ONLY: ContextVar[bool] = ContextVar("rcc_lora_bypassed", default=False)

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
        for layer in module.modules():
            if hasattr(layer, "lora_A"):
                layer.register_forward_pre_hook(_route_to_base, with_kwargs=True)
    model.to(model.device)


def skip_input_casts(model: torch.nn.Module) -> None:
    """Stop peft casting each adapter's input to the adapter's float32 master weights, for training under bf16
    autocast only: there the adapter's matmuls run in bf16 whatever the input, so the cast (and autocast's cast
    back) copies every activation twice for bitwise the same result. Outside autocast a bf16 input would meet
    float32 weights, hence not the default."""
    for layer in model.modules():
        if hasattr(layer, "lora_A"):
            layer.cast_input_dtype_enabled = False


def _route_to_base(module, args, kwargs):
    """Inside `adapters_disabled()`, send every row through the base layer (peft's "__base__" adapter name)."""
    if not _BASE_ONLY.get():
        return None
    return args, {**kwargs, "adapter_names": ["__base__"] * len(args[0])}


@contextmanager
def adapters_disabled() -> Iterator[None]:
    """Run decoders and encoders as their base models, in this thread or task only: every LoRA layer that
    `add_lora` made is bypassed for the duration (a no-op for a model without LoRA)."""
    token = _BASE_ONLY.set(True)
    try:
        yield
    finally:
        _BASE_ONLY.reset(token)


def without_memory_adapters(model, no_memory: bool = True) -> AbstractContextManager:
    """The decoder's LoRA adapters are trained to read memory; a batch with no memory slots at all is
    answered by the untouched base decoder, whose chat and tool-use skills the adapters may have drifted.
    A context manager: `adapters_disabled()` for such a batch of a model with LoRA, else a no-op."""
    return adapters_disabled() if no_memory and model.config.lora else nullcontext()


def adapters_active() -> bool:
    """False inside `adapters_disabled()`: what code that computes the LoRA layers itself reads."""
    return not _BASE_ONLY.get()
