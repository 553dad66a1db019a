"""Bytes per original token: RCC memory (bf16, int8) vs the base model's KV cache vs plain text, and what int8
storage does to the decoder's predictions.

    python benchmarks/memory_bytes/memory_bytes.py          # about 1 minute on 2 cores; writes memory_bytes.md / .json
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

from rcc_model import CompressedMemory, RCCModel
from rcc_model.samples import passkey_document

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "_common"))
from _report import write_report

HERE = Path(__file__).parent


def int8_effect(model: RCCModel, reference: CompressedMemory, other: CompressedMemory,
                target: list[int]) -> dict:
    """What reading `other` (int8) instead of `reference` (bf16) changes when the decoder regenerates
    `target` teacher-forced (the reconstruction task it was trained on): KL(reference || other) of its
    next-token distributions, greedy agreement, and the loss of `target` under each."""
    ids = torch.tensor([target])

    def log_probs(memory):
        out = model.decode(memory.states[None], torch.ones(1, memory.num_slots, dtype=torch.long), ids,
                           torch.ones_like(ids))
        return out.logits[0, memory.num_slots - 1:-1].float().log_softmax(-1)  # (T, V): row j predicts ids[j]

    with torch.no_grad():
        p, q = log_probs(reference), log_probs(other)
    return {"relative_state_error": ((other.states - reference.states).norm() / reference.states.norm()).item(),
            "kl": (p.exp() * (p - q)).sum(-1).mean().item(),
            "greedy_agreement": (p.argmax(-1) == q.argmax(-1)).float().mean().item(),
            "loss_bf16": -p.gather(1, ids[0, :, None]).mean().item(),
            "loss_int8": -q.gather(1, ids[0, :, None]).mean().item()}


def main() -> None:
    model = RCCModel.from_pretrained("default", device="cpu", dtype="float32")
    text = passkey_document(31337, sentences=300)[0]
    ids = model.encode_text(text)
    memory = model.compress(ids)
    cfg = model.decoder.config
    head_dim = cfg.hidden_size // cfg.num_attention_heads
    kv_per_token = 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * head_dim * 2  # K and V, bf16
    tokens = memory.token_count
    window = ids[:model.config.window]  # int8's effect on regenerating one window

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for storage in ("bfloat16", "int8"):
            path = memory.save(Path(tmp) / f"{storage}.rccmem", dtype=storage)
            rows.append((f"RCC memory file, {storage} (r = {memory.rate})", path.stat().st_size / tokens))
        window_memory = model.compress(window)
        path = window_memory.save(Path(tmp) / "window.rccmem", dtype="int8")
        quality = int8_effect(model, window_memory.to(torch.bfloat16).to(torch.float32),
                              CompressedMemory.load(path).to(torch.float32), window)
    rows.append(("SmolLM2 KV cache of the full text, bf16", kv_per_token))
    rows.append((f"RCC decoder KV cache over the slots, bf16 (1/{memory.rate})", kv_per_token / memory.rate))
    rows.append(("plain text, UTF-8", len(text.encode()) / tokens))

    state = "trained, MODEL_CARD.md" if "trained" in model.config.extra else "untrained: identity bridges"
    body = [f"Model: the packaged default ({state}). Sample: a {tokens}-token "
            f"generated document; int8's effect measured on regenerating its first window ({len(window)} tokens) from "
            "that window's memory, teacher-forced.", "",
            "| what is stored | bytes per original token |", "|---|---:|"]
    body += [f"| {name} | {value:,.1f} |" for name, value in rows]
    body += ["", "## int8 storage vs bfloat16", "",
             "| relative state error | next-token KL (nats) | greedy agreement | loss bf16 memory | loss int8 memory |",
             "|---:|---:|---:|---:|---:|",
             f"| {quality['relative_state_error']:.4f} | {quality['kl']:.5f} | "
             f"{100 * quality['greedy_agreement']:.1f}% | {quality['loss_bf16']:.4f} | {quality['loss_int8']:.4f} |"]
    write_report(HERE / "memory_bytes", "Bytes per original token (SmolLM2-135M, r = 4, W = 256)",
                 "python benchmarks/memory_bytes/memory_bytes.py", body,
                 {"bytes_per_token": dict(rows), "int8": quality})


if __name__ == "__main__":
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    main()
