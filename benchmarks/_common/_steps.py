"""What the same-batch training-step benchmarks share: a config's model with its trainable parameters, the
held-out batches every mode of a comparison runs on, and the time of one forward + backward."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator

import torch


def trainable_model(config):
    """The config's model with bf16 frozen weights, and its trainable parameters."""
    from rcc_model.training.loop import build_model, mark_trainable

    model = build_model(config, "bfloat16")
    return model, mark_trainable(model, config.trainable)


def heldout_batches(config, model, count: int) -> Iterator:
    """`count` held-out batches of the config's objective mix, the same ones on every run."""
    from rcc_model.training.batch import collate
    from rcc_model.training.loop import HELDOUT_SEED, build_objective

    build = build_objective(config, model, "heldout")
    for i in range(count):
        yield collate([build(random.Random(f"{HELDOUT_SEED}-{i}-{j}")) for j in range(config.batch_size)],
                      config.window, config.padding)


def step_seconds(model, batch, params) -> float:
    began = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(batch.window_ids, batch.window_lengths, batch.window_owner, batch.input_ids,
                     batch.attention_mask, batch.labels)
    loss.backward()
    for p in params:
        p.grad = None
    return time.perf_counter() - began
