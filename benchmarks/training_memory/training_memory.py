"""What memory training an RCC needs per process, for the packaged base and for 1B and 7B bases.

Training with the recipe (`trainable: "bridges+lora"`, `precision: "bf16"`) holds:
- the frozen base twice (encoder and decoder), in bf16: 2 bytes a parameter, counted exactly from each base's
  architecture (built on PyTorch's meta device: no weights are downloaded or allocated);
- the trained parameters (the L + 1 bridges, H x H each, and LoRA of rank 16 on every attention and MLP
  projection of both), in float32 with their gradients and AdamW's two moments: 16 bytes a parameter, counted
  exactly the same way;
- activations of one micro-batch: MEASURED for the packaged base on this CPU (the peak RSS of one forward and
  backward step, beyond weights and optimizer state), and, for the larger bases, that measurement scaled by
  layers x hidden size, which activations grow with at a fixed window and batch. That scaling is an estimate,
  not a measurement: on a GPU, attention kernels and the allocator's caching change it.

    python benchmarks/training_memory/training_memory.py --batch 8
"""

from __future__ import annotations

import argparse
import random
import resource
import sys
from pathlib import Path

import psutil
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "_common"))
from _report import machine, write_report

HERE = Path(__file__).resolve().parent
GIB = 2**30

# Architectures of public bases (their config.json values), to count parameters on the meta device.
BASES = {
    "Llama-3.2-1B (1.2B)": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                               num_attention_heads=32, num_key_value_heads=8, vocab_size=128256,
                               tie_word_embeddings=True),
    "Mistral-7B (7.2B)": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                             num_attention_heads=32, num_key_value_heads=8, vocab_size=32000,
                             tie_word_embeddings=False),
}


def counts(config, lora_rank: int) -> dict:
    """Parameters of one base, of its bridges and of LoRA on both copies, counted on the meta device."""
    from transformers import AutoModelForCausalLM

    from rcc_model.adapters import DEFAULT_TARGETS

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    base = sum(p.numel() for p in model.parameters())
    lora = 2 * sum(lora_rank * (m.in_features + m.out_features) for name, m in model.named_modules()
                   if isinstance(m, nn.Linear) and name.rsplit(".", 1)[-1] in DEFAULT_TARGETS)
    bridges = (config.num_hidden_layers + 1) * config.hidden_size ** 2
    return {"base_params": base, "lora_params": lora, "bridge_params": bridges,
            "layers_x_hidden": config.num_hidden_layers * config.hidden_size}


def measure_activations(batch: int, window: int, span: int) -> dict:
    """Peak RSS of one bf16 training step of the packaged base, beyond the model and optimizer state."""
    from rcc_model import RCCModel
    from rcc_model.training.batch import collate
    from rcc_model.training.loop import mark_trainable
    from rcc_model.training.objectives import Example

    model = RCCModel.from_base("smollm2-135m-instruct", rate=4, window=window, dtype="bfloat16", device="cpu",
                               lora={"r": 16, "alpha": 32, "encoder": True, "decoder": True})
    params = mark_trainable(model, "bridges+lora")
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    for param in params:  # optimizer state allocated before the step measured
        optimizer.state[param] = {"step": torch.tensor(0.0), "exp_avg": torch.zeros_like(param),
                                  "exp_avg_sq": torch.zeros_like(param)}
        param.grad = torch.zeros_like(param)
    rng = random.Random(0)
    vocab = model.decoder.config.vocab_size
    examples = [Example([rng.randrange(vocab) for _ in range(window)], [], [rng.randrange(vocab) for _ in range(span)])
                for _ in range(batch)]
    data = collate(examples, window, "masked")
    before = psutil.Process().memory_info().rss
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(data.window_ids, data.window_lengths, data.window_owner, data.input_ids, data.attention_mask,
                     data.labels, train_encoder=True)
    loss.backward()
    optimizer.step()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"activation_bytes": max(0, peak - before), "rss_before_step": before, "peak_rss": peak,
            "config": model.decoder.config}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8, help="examples per micro-batch and process (default: 8)")
    parser.add_argument("--window", type=int, default=256, help="encoder window in tokens (default: 256)")
    parser.add_argument("--span", type=int, default=128, help="target tokens per example (default: 128)")
    parser.add_argument("--lora-rank", type=int, default=16, help="LoRA rank (default: 16, the recipe's)")
    parser.add_argument("--out", type=Path, default=HERE / "training_memory", help="result stem (.md, .json)")
    args = parser.parse_args()
    torch.set_num_threads(psutil.cpu_count(logical=False) or 1)

    from transformers import LlamaConfig, MistralConfig

    measured = measure_activations(args.batch, args.window, args.span)
    packaged = counts(measured["config"], args.lora_rank)
    rows = [("SmolLM2-135M (the packaged base)", packaged, measured["activation_bytes"], "measured")]
    for name, spec in BASES.items():
        config = (MistralConfig if "Mistral" in name else LlamaConfig)(**spec)
        c = counts(config, args.lora_rank)
        scale = c["layers_x_hidden"] / packaged["layers_x_hidden"]
        rows.append((name, c, measured["activation_bytes"] * scale, f"scaled x{scale:.1f}"))

    table = ["| base | frozen encoder + decoder (bf16) | bridges + LoRA trained (fp32 + grads + AdamW) | "
             "activations, one micro-batch | total per process |", "|---|---:|---:|---:|---:|"]
    data = []
    for name, c, activations, how in rows:
        frozen = 2 * c["base_params"] * 2
        trained_params = c["bridge_params"] + c["lora_params"]
        trained = trained_params * 16
        total = frozen + trained + activations
        table.append(f"| {name} | {frozen / GIB:.1f} GiB ({c['base_params'] / 1e9:.2f}B x 2) | "
                     f"{trained / GIB:.1f} GiB ({trained_params / 1e6:.0f}M) | {activations / GIB:.1f} GiB ({how}) | "
                     f"**{total / GIB:.1f} GiB** |")
        data.append({"base": name, **c, "frozen_bytes": frozen, "trained_bytes": trained,
                     "activation_bytes": activations, "activations": how, "total_bytes": total})
    body = [f"Micro-batch: {args.batch} examples, window {args.window}, {args.span} target tokens; LoRA rank "
            f"{args.lora_rank}; bf16 frozen weights and autocast. One step of the packaged base peaked at "
            f"{measured['peak_rss'] / GIB:.2f} GiB RSS on this CPU ({measured['rss_before_step'] / GIB:.2f} GiB before "
            "the step).", "", *table, "",
            "Under DDP every process holds all of this; gradient accumulation (`grad_accum`) keeps the activations of "
            "one micro-batch while the global batch grows."]
    command = "python benchmarks/training_memory/training_memory.py " + " ".join(sys.argv[1:])
    write_report(args.out, "Training memory per process", command.strip(), body, {"rows": data},
                 measured_on=machine(torch.get_num_threads()))


if __name__ == "__main__":
    main()
