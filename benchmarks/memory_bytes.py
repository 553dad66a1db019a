"""Bytes per original token: RCC memory (bf16, int8) vs the base model's KV cache vs plain text, and what int8
storage does to the decoder's predictions.

    python benchmarks/memory_bytes.py          # about 1 minute on 2 cores; writes memory_bytes.md / .json
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch

from rcc_model import CompressedMemory, RCCModel
from rcc_model.samples import passkey_document

HERE = Path(__file__).parent


def next_token_divergence(model: RCCModel, reference: CompressedMemory, other: CompressedMemory,
                          prompt: list[int]) -> tuple[float, float]:
    """Mean KL(reference || other) of the decoder's next-token distributions over the prompt positions, and
    the share of positions where the greedy token agrees."""
    def logits(memory):
        ids = torch.tensor([prompt])
        out = model.decode(memory.states[None], torch.ones(1, memory.num_slots, dtype=torch.long), ids,
                           torch.ones_like(ids))
        return out.logits[0].float().log_softmax(-1)

    with torch.no_grad():
        p, q = logits(reference), logits(other)
    kl = (p.exp() * (p - q)).sum(-1).mean().item()
    agree = (p.argmax(-1) == q.argmax(-1)).float().mean().item()
    return kl, agree


def main() -> None:
    model = RCCModel.from_pretrained("default", device="cpu", dtype="float32")
    text = passkey_document(31337, sentences=300)[0]
    memory = model.compress(text)
    cfg = model.decoder.config
    head_dim = cfg.hidden_size // cfg.num_attention_heads
    kv_per_token = 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * head_dim * 2  # K and V, bf16
    tokens = memory.token_count
    prompt = model.encode_text(text[-2000:])  # teacher-forced continuation of the document's own text

    rows, quality = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for storage in ("bfloat16", "int8"):
            path = memory.save(Path(tmp) / f"{storage}.rccmem", dtype=storage)
            rows.append((f"RCC memory file, {storage} (r = {memory.rate})", path.stat().st_size / tokens))
            if storage == "int8":
                loaded = CompressedMemory.load(path).to(torch.float32)
                reference = memory.to(torch.bfloat16).to(torch.float32)
                error = ((loaded.states - reference.states).norm() / reference.states.norm()).item()
                kl, agree = next_token_divergence(model, reference, loaded, prompt)
                quality["default"] = {"relative_state_error": error, "kl": kl, "greedy_agreement": agree}
                # The untrained default reads only entry 0 (B_i = 0); give every layer bridge weight so that
                # int8 error in all entries reaches the decoder.
                with torch.no_grad():
                    for layer in model.bridges.layers:
                        layer.weight.copy_(0.1 * torch.eye(layer.weight.shape[0]))
                kl, agree = next_token_divergence(model, reference, loaded, prompt)
                quality["all_layers_bridged"] = {"relative_state_error": error, "kl": kl, "greedy_agreement": agree}
    rows.append(("SmolLM2 KV cache of the full text, bf16", kv_per_token))
    rows.append((f"RCC decoder KV cache over the slots, bf16 (1/{memory.rate})", kv_per_token / memory.rate))
    rows.append(("plain text, UTF-8", len(text.encode()) / tokens))

    lines = ["# Bytes per original token (SmolLM2-135M, r = 4, W = 256)", "",
             "Command: `python benchmarks/memory_bytes.py`. "
             f"Sample: a {tokens}-token generated document.", "",
             "| what is stored | bytes per original token |", "|---|---:|"]
    lines += [f"| {name} | {value:,.1f} |" for name, value in rows]
    lines += ["", "## int8 storage vs bfloat16", "",
              "| decoder | relative state error | next-token KL (nats) | greedy agreement |", "|---|---:|---:|---:|"]
    for name, q in quality.items():
        lines.append(f"| {name} | {q['relative_state_error']:.4f} | {q['kl']:.5f} | "
                     f"{100 * q['greedy_agreement']:.1f}% |")
    lines += ["", "The packaged default is untrained (identity bridges), so these measure sensitivity, not task "
              "quality; rerun on the trained default before relying on int8."]
    (HERE / "memory_bytes.md").write_text("\n".join(lines) + "\n")
    (HERE / "memory_bytes.json").write_text(json.dumps({"bytes_per_token": dict(rows), "int8": quality}, indent=2))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
