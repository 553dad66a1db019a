"""`rcc train CONFIG.json`: one training loop for this CPU, one GPU, or `accelerate launch` on many.

Order of every step: evaluate -> checkpoint -> train -> log. A batch is a pure function of (seed, step,
micro-batch, process), so a run stopped anywhere resumes exactly from its last checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from rcc_model.adapters import skip_input_casts
from rcc_model.atomic import recover
from rcc_model.bases import decoder_layers, default_device, resolve_dtype
from rcc_model.checkpoint import load_trained_state
from rcc_model.data.build import load_qa, load_tokens
from rcc_model.decoding import answer_end_id
from rcc_model.modeling import RCCModel
from rcc_model.training import objectives
from rcc_model.training.batch import collate
from rcc_model.training.config import TrainConfig
from rcc_model.training.slot_cache import build_slot_cache
from rcc_model.training.state import load_optimizer_state, load_training_weights, save_training_state

# Held-out batches come from this seed, not the run's: every run is measured on the same examples, so learning
# curves of runs with different seeds (one run continuing another) share one yardstick.
HELDOUT_SEED = 0


def build_model(config: TrainConfig, dtype: str) -> RCCModel:
    model = _initial_model(config, dtype)
    reading = {name: getattr(config, name) for name in ("read_slots", "read_alignments")
               if getattr(config, name) is not None}
    if reading:
        model.config = dataclasses.replace(model.config, **reading)  # validated like any RCCConfig
    return model


def _initial_model(config: TrainConfig, dtype: str) -> RCCModel:
    rates = config.rates
    default = rates[0] if rates else None
    several = sorted(set(rates)) if rates and len(set(rates)) > 1 else None  # RCCConfig.rates
    if config.init:
        model = RCCModel.from_pretrained(config.init, dtype=dtype, device="cpu", rate=default)
        if (model.config.window, model.config.padding) != (config.window, config.padding):
            raise ValueError(f"{config.init} uses window={model.config.window}, padding={model.config.padding!r}; "
                             f"the config says window={config.window}, padding={config.padding!r}")
        if rates:  # from here on it trains at these rates
            model.config.extra.pop("trained_rate", None)
            model.config.rates = several
        return model
    lora = None
    if config.trainable == "bridges+lora":
        lora = {**config.lora, "encoder": config.lora.get("encoder", True) and config.train_encoder}
    return RCCModel.from_base(config.base, rate=default or 4, window=config.window, dtype=dtype, device="cpu",
                              padding=config.padding, lora=lora, rates=several)


def compile_blocks(model: RCCModel) -> None:
    """torch.compile, in place, every part of every encoder and decoder block except its attention (whose masks
    and kernels vary by architecture); the blocks themselves carry the slot-injection hooks and stay eager."""
    for causal_lm in (model.encoder, model.decoder):
        for block in decoder_layers(causal_lm):
            for name, part in block.named_children():
                if "attn" not in name and "attention" not in name:
                    part.compile(dynamic=True)


def mark_trainable(model: RCCModel, trainable: str) -> list[torch.nn.Parameter]:
    """Freeze everything, then unfreeze what `trainable` names; trainable parameters are kept in float32."""
    for param in model.parameters():
        param.requires_grad_(False)
    groups = {"bridges": [model.bridges], "bridges+decoder": [model.bridges, model.decoder],
              "all": [model.bridges, model.decoder, model.encoder], "bridges+lora": [model.bridges]}[trainable]
    params = [p for module in groups for p in module.parameters()]
    if trainable == "bridges+lora":
        params += [p for name, p in model.named_parameters() if "lora_" in name]
    for param in params:
        param.data = param.data.float()
        param.requires_grad_(True)
    return params


def build_objective(config: TrainConfig, model: RCCModel, split: str, aligned: int | None = None
                    ) -> objectives.Builder:
    data = Path(config.data)
    tokens = load_tokens(data, split)
    builders = {
        "reconstruction": objectives.reconstruction(tokens, config.window, config.span, config.cue,
                                                      config.whole_window_share, aligned),
        "continuation": objectives.continuation(tokens, config.window, config.span, aligned),
        "long_context": objectives.long_context(tokens, config.window, config.long_context_windows, config.span,
                                                config.cue, aligned),
    }
    if config.objectives.get("numbers", 0) > 0:
        builders["numbers"] = objectives.numbers(tokens, model.tokenizer, config.window)
    if config.objectives.get("qa", 0) > 0:
        builders["qa"] = objectives.question_answering(load_qa(data, split), model.tokenizer, config.window,
                                                       config.long_context_windows, config.qa_reconstruct_instruction,
                                                       tokens, config.qa_haystack, config.qa_kinds,
                                                       answer_end=answer_end_id(model))
    if config.objectives.get("mixed_reading", 0) > 0:
        builders["mixed_reading"] = objectives.mixed_reading(load_qa(data, split), model.tokenizer, tokens,
                                                             config.window, config.mixed_cases,
                                                             *config.mixed_windows, config.qa_kinds,
                                                             answer_end=answer_end_id(model))
    return objectives.mixture(builders, config.objectives)


def export(config: TrainConfig, directory: Path) -> Path:
    """Write the run's latest state as an RCC checkpoint (`from_pretrained`-ready), weights in bfloat16."""
    state = Path(config.out) / "state"
    recover(state)  # a save interrupted after it committed is finished before it is read
    if not (state / "state.json").is_file():
        raise FileNotFoundError(f"{state} holds no training state to export")
    model = build_model(config, "auto")
    load_trained_state(model, load_file(str(state / "weights.safetensors")), source=str(state))
    return model.save_pretrained(directory, dtype=torch.bfloat16)


def _peak_memory(device: torch.device) -> dict:
    """Peak accelerator memory so far, for choosing a batch size; nothing on a CPU."""
    if device.type != "cuda":
        return {}
    return {"peak_memory_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 2)}


def lr_at(config: TrainConfig, step: int) -> float:
    """Linear warm-up, then cosine decay to `min_lr`."""
    if step < config.warmup:
        return config.lr * (step + 1) / config.warmup
    progress = min(1.0, (step - config.warmup) / max(1, config.steps - config.warmup))
    return config.min_lr + 0.5 * (config.lr - config.min_lr) * (1 + math.cos(math.pi * progress))


def resolve_precision(precision: str) -> str:
    """The accelerate mixed-precision mode for `TrainConfig.precision` on this machine (its "auto" resolved)."""
    bf16 = resolve_dtype("auto", default_device()) == torch.bfloat16  # the model's own "auto" rule
    if precision == "auto":
        return "bf16" if bf16 else "no"
    if precision == "bf16" and not bf16:
        raise RuntimeError('"precision": "bf16" on hardware without bfloat16 matrix instructions: PyTorch would '
                           'emulate them (on a CPU about 100x slower than float32). Set "precision": "auto" or "no"')
    return precision


def train(config: TrainConfig) -> Path:
    from accelerate import Accelerator

    precision = resolve_precision(config.precision)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    # Without an accelerator, processes launched together (`accelerate launch --multi_gpu`, torchrun) train on
    # the CPU over gloo.
    accelerator = Accelerator(mixed_precision=precision, gradient_accumulation_steps=config.grad_accum,
                              cpu=default_device().type == "cpu")
    sharded = accelerator.distributed_type.value == "FSDP"
    if accelerator.distributed_type.value in ("DEEPSPEED", "MEGATRON_LM") or (sharded and not accelerator.is_fsdp2):
        raise ValueError(f"training runs replicated (DDP) or sharded by FSDP2, not under "
                         f"{accelerator.distributed_type.value}{' version 1' if sharded else ''}: launch with "
                         f"configs/accelerate/ddp.yaml or configs/accelerate/fsdp.yaml")
    if sharded and config.slot_cache:  # the cache is built by one process while the others wait
        raise ValueError("`slot_cache` is built by the main process alone, which a model sharded across processes "
                         "cannot do: drop the cache or launch with configs/accelerate/ddp.yaml")
    torch.manual_seed(config.seed)
    frozen_dtype = "bfloat16" if precision == "bf16" and config.trainable in ("bridges", "bridges+lora") \
        else "float32"
    model = build_model(config, frozen_dtype)
    attention = config.attention or ("eager" if accelerator.device.type == "cuda" else None)
    if attention:
        for causal_lm in (model.encoder, model.decoder):
            causal_lm.set_attn_implementation(attention)
    if config.compile:
        compile_blocks(model)
    params = mark_trainable(model, config.trainable)
    if precision == "bf16":  # every step runs under bf16 autocast
        skip_input_casts(model)
    bridge_ids = {id(p) for p in model.bridges.parameters()}
    groups = [{"params": [p for p in params if id(p) in bridge_ids], "scale": config.bridge_lr_scale},
              {"params": [p for p in params if id(p) not in bridge_ids], "scale": 1.0}]
    optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=config.lr, betas=(0.9, 0.95),
                                  weight_decay=config.weight_decay)
    resuming = (out / "state").is_dir()
    start = load_training_weights(out / "state", model) if resuming else 0
    # once sharded, a parameter no longer tells whether it trained: name what can train while it still does
    sharded_names = {*model.trained_state_dict(), *(n for n, p in model.named_parameters() if p.requires_grad)} \
        if sharded else None
    with model._rewriting_base_in_place():
        model, optimizer = accelerator.prepare(model, optimizer)
    if resuming:
        load_optimizer_state(out / "state", optimizer)
    params = [p for group in optimizer.param_groups for p in group["params"]]  # FSDP replaced them by shards
    core: RCCModel = accelerator.unwrap_model(model)
    rates = core.config.trained_rates  # trained in turn, one per micro-batch
    cache = None
    if config.slot_cache:
        if len(rates) > 1:
            raise ValueError(f"`slot_cache` holds one rate's slots; this run trains rates {rates}: drop the cache")
        with accelerator.main_process_first(), accelerator.autocast():
            cache = build_slot_cache(core, load_tokens(Path(config.data), "train"), config.slot_cache,
                                     out / "slot-cache")
    train_examples = build_objective(config, core, "train", config.slot_cache or None)
    heldout_examples = build_objective(config, core, "heldout")  # evaluated with the (frozen) encoder live

    def batch_for(builder, seed, *key):
        """This process's share of one global batch drawn from (seed, *key): N processes of `batch_size` train on
        the very examples that one process of N x `batch_size` would. (The key's last 0 once was the process
        index; keeping it keeps every one-process run's batches as they were.)"""
        rng = random.Random(json.dumps([seed, *key, 0]))
        drawn = [builder(rng) for _ in range(config.batch_size * (accelerator.process_index + 1))]
        return collate(drawn[-config.batch_size:], config.window, config.padding)

    def run(batch, train_encoder, rate):
        batch = batch.to(accelerator.device)
        states = None
        if cache is not None and batch.window_rows is not None:
            states = cache.rows(batch.window_rows).to(accelerator.device)
        return model(batch.window_ids, batch.window_lengths, batch.window_owner, batch.input_ids,
                     batch.attention_mask, batch.labels, train_encoder=train_encoder, window_states=states, rate=rate)

    def evaluate() -> dict:
        """Held-out loss at the default rate (and, for several rates, at each)."""
        model.eval()
        with torch.no_grad(), accelerator.autocast():
            by_rate = {r: sum(run(batch_for(heldout_examples, HELDOUT_SEED, "eval", i), False, r).item()
                              for i in range(config.eval_batches)) / config.eval_batches for r in rates}
        model.train()
        record = {"heldout_loss": by_rate[core.config.rate]}
        return record if len(rates) == 1 else {**record, "heldout_loss_by_rate": by_rate}

    def log(record: dict) -> None:
        if accelerator.is_main_process:
            with (out / "log.jsonl").open("a") as f:
                f.write(json.dumps(record) + "\n")
            print(json.dumps(record), flush=True)

    trainable = sum(p.numel() for p in params)
    log({"event": "start", "step": start, "trainable_params": trainable, "config": config.to_dict(),
         "processes": accelerator.num_processes,
         "distributed": accelerator.distributed_type.value, "device": str(accelerator.device), "precision": precision,
         "attention": core.decoder.config._attn_implementation})
    began, context_tokens, losses = time.perf_counter(), 0, []
    model.train()
    step = start
    end = config.steps if config.stop_at is None else min(config.stop_at, config.steps)
    while step < end:
        if step % config.eval_every == 0:
            log({"event": "eval", "step": step, **evaluate()})
        if step > start and step % config.save_every == 0:
            save_training_state(out / "state", core, optimizer, step, accelerator, sharded_names)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(config, step) * group["scale"]
        for micro in range(config.grad_accum):
            batch = batch_for(train_examples, config.seed, step, micro)
            with accelerator.accumulate(model), accelerator.autocast():
                loss = run(batch, config.train_encoder, rates[(step * config.grad_accum + micro) % len(rates)])
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(params, 1.0)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            context_tokens += batch.context_tokens
            # every process sees the same mean, so all of them stop together (a lone one would hang the rest)
            losses.append(accelerator.reduce(loss.detach(), reduction="mean").item())
            if not math.isfinite(losses[-1]):  # stop before a NaN reaches the saved state
                raise FloatingPointError(f"non-finite training loss at step {step}; the last checkpoint is "
                                         f"intact; lower `lr` or try another `attention`")
        step += 1
        elapsed = time.perf_counter() - began
        if step % config.log_every == 0:
            log({"event": "train", "step": step, "loss": sum(losses) / len(losses), "lr": lr_at(config, step - 1),
                 "context_tokens_per_s": context_tokens * accelerator.num_processes / elapsed,
                 "elapsed_s": elapsed, **_peak_memory(accelerator.device)})
            losses = []
        if config.max_minutes is not None and elapsed > 60 * config.max_minutes:
            log({"event": "time budget reached", "step": step})
            break
    if step == end < config.steps:
        log({"event": "stop_at reached", "step": step})
    save_training_state(out / "state", core, optimizer, step, accelerator, sharded_names)
    if step >= config.steps:
        log({"event": "eval", "step": step, **evaluate()})
        if sharded:  # the main process holds no whole parameter: export what the state gathered
            if accelerator.is_main_process:
                export(config, out / "final")
        elif accelerator.is_main_process:
            core.save_pretrained(out / "final")
    return out
