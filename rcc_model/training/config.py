"""`TrainConfig`: every knob of a training run, read from a JSON file (`rcc train CONFIG.json`)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..config import check_rates

TRAINABLE = ("bridges", "bridges+lora", "bridges+decoder", "all")


@dataclass
class TrainConfig:
    """A training run. Paths are resolved relative to the config file.

    Args:
        data: folder written by `rcc data build`.
        out: run folder: `state/` (exact-resume checkpoint), `log.jsonl`, `final/` (RCC checkpoint).
        base / init: a new RCC from `base`, or continue from the RCC checkpoint `init`.
        rate: compression rate; None = 4 for a new model, the checkpoint's own with `init`. Another rate with
            `init` continues that model at the new rate (a curriculum over r: r = 8 from a trained r = 4).
            A list trains one model at several rates, in turn step by step; the first is its default.
        trainable: "bridges", "bridges+lora" (LoRA on encoder and decoder), "bridges+decoder" (full decoder),
            or "all".
        train_encoder: backpropagate into the encoder (False = frozen, detached slot states: cheaper).
        slot_cache: with a frozen encoder, encode this many aligned windows of the training stream once
            (`out/slot-cache/`, 2.3 MB per window for the SmolLM2 default) and draw every training context
            from them, so steps run no encoder at all; 0 = off. Stream objectives only (not qa).
        objectives: weights of reconstruction, continuation, long_context, numbers (reconstruction of text
            with random numbers written in: exact digit order), qa, mixed_reading (qa as a selective reading
            gives it: some windows as text before the question, others as slots).
        span / cue / whole_window_share: reconstruction regenerates the whole window (that share of the
            examples) or a `span` after `cue` tokens of the text as a cue.
        qa_haystack: share of qa examples whose document is hidden at a random depth inside real text of the
            training stream, grown to a random length of up to `long_context_windows` windows (most generated
            documents fit one window, so without it questions are never answered across many windows).
        qa_kinds: weights of the generated qa kinds ("fact", "multi-fact", "not-in-document", "definition");
            None = as generated. A run can stress exact facts over the "does not say" answers.
        mixed_cases: mixed_reading's weights of where the window stating the answer goes: "expanded" (read as
            text), "compressed" (read as slots) or "absent" (not read: "The document does not say.").
        mixed_windows: mixed_reading's most windows read as text, and as slots, per example (each drawn from 1
            to its most).
        stop_at: end the run after this step (its state saved, so raising or removing it resumes) while the
            learning-rate schedule still spans `steps`: reproduces, step for step on any machine, a run that
            its `max_minutes` stopped early.
        attention: the attention kernel of encoder and decoder while training ("eager", "sdpa", ...); None =
            "eager" on CUDA, the base's default elsewhere. On an H100 and an H200 (torch 2.11) sdpa's backward gave NaN
            gradients from the first step (the all-masked rows of left-padded memory slots, most likely), while
            eager, which masks with a finite minimum, trained; on a CPU sdpa trains and is faster on the recipe's
            long rows, while eager is faster on short ones (e.g. 64-token spans from a slot cache).
        compile: torch.compile each transformer block's parts but its attention (MLP, norms) in encoder and
            decoder, to fuse their elementwise work; attention and the slot-injection hooks on whole blocks stay
            eager. The same losses; on a small CPU it gains next to nothing after a first step that compiles, so
            it is off by default; it is meant for accelerators.
        precision: "bf16" (frozen weights stored in bf16, every step under bf16 autocast, trained weights in
            float32), "fp16", "no" (float32), or "auto": bf16 where the hardware computes it (a bf16-capable
            GPU; a CPU with bfloat16 matrix instructions, AVX-512, AMX or Arm BF16: `bases.cpu_has_fast_bf16`),
            float32 elsewhere. A CPU without those instructions refuses "bf16": PyTorch emulates it there, about
            100x slower than float32.
        bridge_lr_scale: the bridges' learning rate relative to `lr` (full d x d maps move faster than
            adapters under Adam).
        read_slots / read_alignments: written into the checkpoints the run saves (`final/`, `--export`): how
            much of a memory, and at how many slot alignments, the integrations read with the model
            (`RCCConfig`); None = the init's. Training does not use them.
    """

    data: str
    out: str
    base: str = "smollm2-135m-instruct"
    init: str | None = None
    rate: int | list[int] | None = None
    window: int = 256
    padding: str = "masked"
    trainable: str = "bridges+lora"
    lora: dict[str, Any] = field(default_factory=lambda: {"r": 16, "alpha": 32, "encoder": True, "decoder": True})
    train_encoder: bool = True
    slot_cache: int = 0
    objectives: dict[str, float] = field(default_factory=lambda: {"reconstruction": 1.0})
    span: int = 128
    cue: int = 8
    whole_window_share: float = 0.5
    long_context_windows: int = 4
    qa_reconstruct_instruction: float = 0.5
    qa_haystack: float = 0.0
    qa_kinds: dict[str, float] | None = None
    mixed_cases: dict[str, float] = field(default_factory=lambda: {"expanded": 0.4, "compressed": 0.4,
                                                                   "absent": 0.2})
    mixed_windows: list[int] = field(default_factory=lambda: [2, 2])
    batch_size: int = 8
    grad_accum: int = 1
    lr: float = 1e-3
    min_lr: float = 1e-4
    bridge_lr_scale: float = 1.0
    warmup: int = 50
    weight_decay: float = 0.0
    steps: int = 1000
    precision: str = "auto"
    eval_every: int = 100
    eval_batches: int = 4
    save_every: int = 50
    log_every: int = 10
    max_minutes: float | None = None
    stop_at: int | None = None
    seed: int = 0
    attention: str | None = None
    compile: bool = False
    read_slots: int | None = None
    read_alignments: int | None = None

    def __post_init__(self) -> None:
        if self.trainable not in TRAINABLE:
            raise ValueError(f"`trainable` must be one of {TRAINABLE}, got {self.trainable!r}")
        if self.precision not in ("auto", "bf16", "fp16", "no"):
            raise ValueError(f"`precision` must be auto, bf16, fp16 or no, got {self.precision!r}")
        if self.rates is not None:  # checked here too, so a bad config fails before a model loads
            if not self.rates:
                raise ValueError("`rate` must name at least one rate, got []")
            check_rates(self.rates, self.window)
        if self.slot_cache:
            if self.train_encoder:
                raise ValueError("`slot_cache` needs a frozen encoder: set `train_encoder` to false")
            made = sorted(n for n in ("numbers", "qa", "mixed_reading") if self.objectives.get(n, 0) > 0)
            if made:
                raise ValueError(f"`slot_cache` covers the token stream only; {' and '.join(made)} contexts "
                                 "are not cached")
        if len(self.mixed_windows) != 2 or min(self.mixed_windows) < 1:
            raise ValueError(f"`mixed_windows` is [most windows read as text, most read as slots], each at least "
                             f"1; got {self.mixed_windows}")
        for name in ("batch_size", "grad_accum", "steps", "eval_every", "save_every", "log_every", "stop_at"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be at least 1, got {getattr(self, name)}")

    @property
    def rates(self) -> list[int] | None:
        """The rates to train, in turn; None = the checkpoint's own (or 4)."""
        return None if self.rate is None else [self.rate] if isinstance(self.rate, int) else list(self.rate)

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        path = Path(path)
        data = json.loads(path.read_text())
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"{path}: unknown training settings {unknown}")
        config = cls(**data)
        for name in ("data", "out", "init"):  # `init` may also be a packaged model name
            value = getattr(config, name)
            if value and not Path(value).is_absolute() and (name != "init" or (path.parent / value).exists()):
                setattr(config, name, str((path.parent / value).resolve()))
        return config

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
