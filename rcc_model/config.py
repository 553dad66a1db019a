"""`RCCConfig`: every setting that defines an RCC model, saved as JSON beside its weights."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

CONFIG_NAME = "rcc_config.json"

Padding = Literal["masked", "tile"]
DTypeName = Literal["auto", "float32", "bfloat16", "float16"]
BridgeInit = Literal["identity", "normal"]


def dtype_name(dtype: object) -> str:
    """A dtype given as its name ("bfloat16", "auto") or as a torch dtype (`torch.bfloat16`), as its name: every
    `dtype=` of the package takes either, as Hugging Face's loaders do."""
    if isinstance(dtype, str):
        return dtype
    name = str(dtype)  # "torch.bfloat16"; read without importing torch
    if type(dtype).__module__ == "torch" and name.startswith("torch."):
        return name.removeprefix("torch.")
    raise TypeError(f"`dtype` must be a torch dtype or its name, got {dtype!r}")


def check_rates(rates: list[int], window: int) -> None:
    """Each slot summarises r whole tokens of one window, so every rate must divide the window."""
    for rate in rates:
        if not isinstance(rate, int) or rate < 1 or window % rate:
            raise ValueError(f"`rate` must be a positive integer that divides `window`, got rate={rate!r}, "
                             f"window={window}")


@dataclass
class RCCConfig:
    """Configuration of an RCC encoder-decoder pair built from one base causal LM.

    Args:
        base: a registered base name (see `rcc_model.bases.REGISTRY`) or a local Hugging Face model folder.
        rate: compression rate r: one memory slot per r context tokens (the default of `compress`).
        rates: every rate the model was trained to read, `rate` among them (a multi-rate model compresses
            at any of them, chosen per call); None = `rate` only.
        window: encoder window W in tokens; windows are encoded independently. `rate` must divide it.
        layer_map: for each decoder layer i, the encoder hidden-state entries (indices into HF's
            `output_hidden_states`, 0 = embeddings) whose mean, through bridge B_i, is added to the slot
            states after that layer. An empty entry injects nothing there. `None` = identity: layer i <- i+1.
        padding: how a window shorter than W is handled. "masked" (default) encodes the partial window
            as is and keeps ceil(n/r) slots, so memory holds exactly the text; "tile" reproduces the
            paper's release: short contexts are repeated to W tokens and long ones left-padded with their
            own tail to a multiple of W, so that the true end of the text closes the last window.
        split: where "masked" windows end: "fixed" (every W tokens) or "sentence" (after the last sentence end
            in the second half of each window, so no sentence is cut between two windows; text only).
        dtype: compute dtype; "auto" = bfloat16 on bf16-capable CUDA and on a CPU with bfloat16 matrix
            instructions (`bases.cpu_has_fast_bf16`), float32 on other CPUs, float16 elsewhere.
        memory_dtype: dtype of stored slot states (`CompressedMemory.states`).
        bridge_init: "identity" (B_embed = I, B_i = 0: the decoder starts as the plain base model reading
            the sampled tokens) or "normal" (N(0, 0.02), as the release).
        lora: low-rank adapters on the encoder and/or decoder, e.g. {"r": 16, "alpha": 32, "encoder": True,
            "decoder": True, "targets": ["q_proj", "v_proj"]}; None = no adapters.
        base_fingerprint: identity of the base weights this RCC was made from; filled in when built.
        read_slots: the most memory slots this model was measured to read well (its model card says how);
            the integrations read the windows most relevant to each question within it when their documents
            hold more (`rcc_model.reading`). None = as many as the decoder's positions allow.
        expand_tokens: how many tokens of the windows that best match a question the model reads as plain text,
            before the question, besides the slots it reads (`rcc_model.reading`); 0 = slots only. What this model
            was measured to read best with (its model card says how).
        read_alignments: how many slot alignments of what a question reads the integrations decode together
            (`rcc_model.aligned_views`, `MemoryViews`): 1 = the stored memory only; 2 = also its windows
            compressed again with slot boundaries moved by r / 2 (one encoder pass over the text read, one
            more decoder row). What this model was measured to read best with (its model card says how).
        abstention: the answer this model was trained to give when its memory does not hold one (the
            default's QA data: "The document does not say."); None = no such answer.
        abstention_margin: with `abstention`, a greedy answer is the abstention exactly where the model scores
            it more than this many nats above the best answer that does not begin with it, both scored whole
            (`abstention.weigh_abstention`); None = plain greedy decoding. Greedy decoding commits at the first
            token, while the answer the model would have written, scored whole, can be the likelier one, and the
            reverse. A margin of 0 or more keeps only clear abstentions (greedy answers are not weighed); below 0,
            the abstention also replaces an answer it trails by less than that: a model that declines rather
            than guess. Its model card says how the margin was measured.
        reconstruct_beams / reconstruct_verify / reconstruct_anchored: how `RCCModel.reconstruct` decodes each
            window unless told otherwise (`rcc_model.beam_search.Search`): 1, 0.0, False = greedy; more beams,
            each block checked against the memory (nats per unit of distance) and the token each slot holds
            written in place are slower and, for weights that pack their slots well, closer to the text. Its
            model card says how they were measured.
    """

    base: str = "smollm2-135m-instruct"
    rate: int = 4
    rates: list[int] | None = None
    window: int = 256
    layer_map: list[list[int]] | None = None
    padding: Padding = "masked"
    split: Literal["fixed", "sentence"] = "fixed"
    dtype: DTypeName = "auto"
    memory_dtype: Literal["float32", "bfloat16", "float16"] = "bfloat16"
    bridge_init: BridgeInit = "identity"
    lora: dict[str, Any] | None = None
    base_fingerprint: str | None = None
    read_slots: int | None = None
    expand_tokens: int = 0
    read_alignments: int = 1
    abstention: str | None = None
    abstention_margin: float | None = None
    reconstruct_beams: int = 1
    reconstruct_verify: float = 0.0
    reconstruct_anchored: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.rate, int) or self.rate < 1:
            raise ValueError(f"`rate` must be a positive integer, got rate={self.rate!r}")
        if not isinstance(self.window, int) or self.window < 1:
            raise ValueError(f"`window` must be a positive integer, got window={self.window!r}")
        if self.rates is not None:
            self.rates = sorted({int(r) for r in self.rates})
            if self.rate not in self.rates:
                raise ValueError(f"`rates` must include `rate`, got rate={self.rate}, rates={self.rates}")
        check_rates(self.trained_rates, self.window)
        if self.padding not in ("masked", "tile"):
            raise ValueError(f"`padding` must be 'masked' or 'tile', got padding={self.padding!r}")
        if self.split not in ("fixed", "sentence"):
            raise ValueError(f"`split` must be 'fixed' or 'sentence', got split={self.split!r}")
        self.dtype, self.memory_dtype = dtype_name(self.dtype), dtype_name(self.memory_dtype)
        if self.dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise ValueError(f"unknown `dtype` {self.dtype!r}")
        if self.memory_dtype not in ("float32", "bfloat16", "float16"):
            raise ValueError(f"unknown `memory_dtype` {self.memory_dtype!r}")
        if self.bridge_init not in ("identity", "normal"):
            raise ValueError(f"`bridge_init` must be 'identity' or 'normal', got {self.bridge_init!r}")
        if self.lora is not None:
            unknown = set(self.lora) - {"r", "alpha", "encoder", "decoder", "targets"}
            if unknown or int(self.lora.get("r", 0)) < 1:
                raise ValueError(f"`lora` takes r >= 1, alpha, encoder, decoder, targets; got {self.lora}")
        if self.layer_map is not None:
            self.layer_map = [[int(j) for j in entry] for entry in self.layer_map]
        if self.read_slots is not None and (not isinstance(self.read_slots, int) or self.read_slots < 1):
            raise ValueError(f"`read_slots` must be a positive integer or None, got {self.read_slots!r}")
        if not isinstance(self.expand_tokens, int) or self.expand_tokens < 0:
            raise ValueError(f"`expand_tokens` must be a non-negative integer, got {self.expand_tokens!r}")
        if not isinstance(self.read_alignments, int) or not 1 <= self.read_alignments <= self.rate:
            raise ValueError(f"`read_alignments` must be an integer from 1 to the rate ({self.rate}), "
                             f"got {self.read_alignments!r}")
        if self.abstention is not None and not (isinstance(self.abstention, str) and self.abstention.strip()):
            raise ValueError(f"`abstention` must be a non-empty string or None, got {self.abstention!r}")
        if self.abstention_margin is not None:
            if self.abstention is None:
                raise ValueError("`abstention_margin` needs `abstention`: the answer it weighs")
            self.abstention_margin = float(self.abstention_margin)
        if not isinstance(self.reconstruct_beams, int) or self.reconstruct_beams < 1:
            raise ValueError(f"`reconstruct_beams` must be a positive integer, got {self.reconstruct_beams!r}")
        if not isinstance(self.reconstruct_verify, (int, float)) or self.reconstruct_verify < 0:
            raise ValueError(f"`reconstruct_verify` must be a number >= 0, got {self.reconstruct_verify!r}")
        self.reconstruct_verify = float(self.reconstruct_verify)
        if not isinstance(self.reconstruct_anchored, bool):
            raise ValueError(f"`reconstruct_anchored` must be true or false, got {self.reconstruct_anchored!r}")

    @property
    def trained_rates(self) -> list[int]:
        return self.rates if self.rates is not None else [self.rate]

    def check_rate(self, rate: int | None = None) -> int:
        """`rate`, or the default one; a multi-rate model reads any rate it was trained at, and any other
        rate is refused (memory made there reads as noise)."""
        if rate is None:
            return self.rate
        if rate not in self.trained_rates:
            raise ValueError(f"this model was trained at rate {'/'.join(map(str, self.trained_rates))}, "
                             f"not {rate}; to measure it at another rate load it with from_pretrained(rate={rate})")
        return rate

    def resolved_layer_map(self, num_decoder_layers: int, num_encoder_entries: int) -> list[list[int]]:
        """The layer map with the identity default filled in, checked against the two models."""
        layer_map = self.layer_map
        if layer_map is None:
            if num_encoder_entries != num_decoder_layers + 1:
                raise ValueError(
                    "the identity layer map needs an encoder with as many layers as the decoder, got "
                    f"{num_encoder_entries - 1} encoder and {num_decoder_layers} decoder layers: "
                    "pass `layer_map`"
                )
            return [[i + 1] for i in range(num_decoder_layers)]
        if len(layer_map) != num_decoder_layers:
            raise ValueError(
                f"`layer_map` needs one entry per decoder layer ({num_decoder_layers}), got {len(layer_map)}"
            )
        for i, entry in enumerate(layer_map):
            bad = [j for j in entry if not 1 <= j < num_encoder_entries]
            if bad:
                raise ValueError(
                    f"`layer_map[{i}]` names encoder entries {bad}; valid are 1..{num_encoder_entries - 1}"
                )
        return layer_map

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RCCConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown RCCConfig fields {unknown}; is this checkpoint from a newer rcc?")
        return cls(**data)

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / CONFIG_NAME
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, directory: str | Path) -> RCCConfig:
        path = Path(directory) / CONFIG_NAME
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: {directory} is not an RCC checkpoint folder")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not valid JSON: {e}") from e
        return cls.from_dict(data)
