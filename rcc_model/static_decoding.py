"""Cached decoding without the stock decoder's per-call machinery, for decoders of the Llama family.

A decoding step is one token per cache row, yet the stock `forward` runs the generic path of a prefill: module
calls and hooks around every projection (with LoRA, three linear layers each), a causal mask built anew, a
dynamic cache that concatenates every layer's keys and values, and linear layers that on the CPU relayout their
bfloat16 weights on every call. On a 135M model that overhead, not the arithmetic, bounds tokens per second.
`StaticDecoder.step` runs the decoder's own weights, rotary embedding and attention function in the stock
layer's order of operations without that machinery: keys and values go into buffers allocated once
(`StaticCache`), bfloat16 weights are prepacked for oneDNN once, and linear layers that read the same input run
as one product. Every piece computes bitwise what the stock one does (the prepacked and side-by-side products
are checked on a probe when built), so decoding gives the stock decoder's logits bit for bit and the same tokens
(`tests/unit/test_static_decoding.py`).

One stock cost stays, for that reason: for an unpadded row the stock attention takes sdpa's `enable_gqa` kernel,
on the CPU several times slower than the kernel it takes for a padded batch, and the two round attention outputs
differently, which flips greedy decoding at near ties (one of two reconstructed windows, at its second token).

Shapes: R cache rows, C cache capacity (cached positions + steps still to take), N_kv key/value heads, D head
dim, H hidden size, V vocabulary.
"""

from __future__ import annotations

import math
import sys
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from rcc_model.adapters import adapters_active
from rcc_model.bases import cpu_has_fast_bf16

ARCHITECTURES = frozenset({"llama", "mistral", "qwen2"})
"""Model types whose decoder layers run `norm -> attention (q, k, v, rotary, o) -> residual -> norm -> gated MLP
-> residual` with the module names `StaticDecoder` reads; a sliding window is refused where configured."""

_BUILT: weakref.WeakKeyDictionary[nn.Module, tuple[tuple, StaticDecoder | None]] = weakref.WeakKeyDictionary()
_BUILDING = threading.Lock()  # threads decoding with one model at once build its step once


def _packed(weight: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """`x -> x @ weight.T` by oneDNN with the weight prepacked once: for bfloat16 on the CPU the kernel the plain
    product calls, without relayouting the weight on every call."""
    packed = torch.ops.mkldnn._reorder_linear_weight(weight, None)
    return lambda x: torch.ops.mkldnn._linear_pointwise(x, packed, None, "none", [], "")


class _Linears:
    """Linear layers of one decoder layer that read the same input (q, k, v; gate, up), or one alone, plain or
    wrapped by peft's LoRA: their outputs side by side, each as the stock module computes it (the base product
    plus, where adapters are on, `B(A(x)) * scaling` with x in A's dtype).

    Where every weight is bfloat16 on a CPU that multiplies bfloat16 in hardware (oneDNN prepacks only there; an
    AVX2-only CPU refuses) and LoRA scalings are powers of two, the group runs as one
    prepacked product for the base weights and the A's side by side, and with LoRA one more for the B's
    block-diagonal, each B times its scaling: bitwise the same outputs (checked on a probe when built; otherwise
    the layers run one by one, as the stock modules do)."""

    def __init__(self, modules: list[nn.Module]):
        bases = [getattr(m, "base_layer", m) for m in modules]
        self.outputs = sum(b.out_features for b in bases)
        self.loras = [_lora_of(m) for m in modules]
        self.weights = [(b.weight.detach(), None if b.bias is None else b.bias.detach()) for b in bases]
        self.fused = None
        tensors = [w for w, _ in self.weights] + [t for lora in self.loras if lora for t in lora[:2]]
        if (all(t.device.type == "cpu" and t.dtype == torch.bfloat16 for t in tensors)
                and all(b is None for _, b in self.weights) and cpu_has_fast_bf16()
                and all(math.frexp(lora[2])[0] == 0.5 for lora in self.loras if lora)):
            self.fused = self._fuse()
            probe = torch.randn(2, 1, bases[0].in_features, dtype=torch.bfloat16)
            if not all(torch.equal(self._run_fused(probe, on), self._run_each(probe, on)) for on in (True, False)):
                self.fused = None

    def _fuse(self) -> tuple[Callable, Callable | None]:
        downs = [lora[0] for lora in self.loras if lora]  # each A reads the input its base weight reads
        product = _packed(torch.cat([w for w, _ in self.weights] + downs))
        if not downs:
            return product, None
        ups = [lora[1] * lora[2] if lora else w.new_zeros(w.shape[0], 0)
               for lora, (w, _) in zip(self.loras, self.weights)]
        return product, _packed(torch.block_diag(*ups))

    def _run_fused(self, x: torch.Tensor, active: bool) -> torch.Tensor:
        product, up = self.fused
        out = product(x)  # (..., outputs + LoRA ranks): every base output, then every A output
        if up is None:
            return out
        base = out[..., :self.outputs]
        return base + up(out[..., self.outputs:]) if active else base

    def _run_each(self, x: torch.Tensor, active: bool) -> torch.Tensor:
        outs = []
        for (weight, bias), lora in zip(self.weights, self.loras):
            out = nn.functional.linear(x, weight, bias)
            if lora is not None and active:
                down, up, scaling = lora
                low = nn.functional.linear(nn.functional.linear(x.to(down.dtype), down), up) * scaling
                out = (out + low).to(out.dtype)
            outs.append(out)
        return torch.cat(outs, -1) if len(outs) > 1 else outs[0]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """The layers' outputs side by side, (..., sum of their output features)."""
        active = adapters_active()
        return self._run_fused(x, active) if self.fused else self._run_each(x, active)


def _lora_of(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor, float] | None:
    """(A, B, scaling) of a peft LoRA linear layer's one active adapter; None for a plain linear layer."""
    if not hasattr(module, "lora_A"):
        return None
    name = module.active_adapters[0]
    return module.lora_A[name].weight.detach(), module.lora_B[name].weight.detach(), module.scaling[name]


def _supported_projection(module: nn.Module) -> bool:
    """A plain linear layer, or peft's LoRA linear layer with one plain adapter active and nothing merged."""
    if type(module) is nn.Linear:
        return True
    if not hasattr(module, "lora_A") or type(getattr(module, "base_layer", None)) is not nn.Linear:
        return False
    names = module.active_adapters
    return (len(names) == 1 and getattr(module, "cast_input_dtype_enabled", True) and not module.merged
            and not module.disable_adapters and not module.lora_variant
            and type(module.lora_dropout[names[0]]) is nn.Identity
            and module.lora_A[names[0]].bias is None and module.lora_B[names[0]].bias is None)


def _rms_norm(norm: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """The Llama family's RMSNorm `forward`, without the module call (and the kernel hub's lookup) around it."""
    weight, eps = norm.weight, norm.variance_epsilon

    def forward(hidden: torch.Tensor) -> torch.Tensor:
        dtype, hidden = hidden.dtype, hidden.to(torch.float32)
        return weight * (hidden * hidden.pow(2).mean(-1, keepdim=True).add_(eps).rsqrt_()).to(dtype)

    return forward


class _Layer:
    """One decoder layer's pieces: its norms, attention scale, activation and linear layers side by side."""

    def __init__(self, layer: nn.Module):
        attention, mlp = layer.self_attn, layer.mlp
        self.input_norm, self.post_norm = _rms_norm(layer.input_layernorm), _rms_norm(layer.post_attention_layernorm)
        self.attention = attention  # the stock attention function reads its head grouping
        self.scaling, self.act = attention.scaling, mlp.act_fn
        self.qkv = _Linears([attention.q_proj, attention.k_proj, attention.v_proj])
        self.o = _Linears([attention.o_proj])
        self.gate_up, self.down = _Linears([mlp.gate_proj, mlp.up_proj]), _Linears([mlp.down_proj])


class StaticDecoder:
    """The single-token step of one decoder, for `StaticCache`; `of` builds it once per decoder weights."""

    def __init__(self, decoder: nn.Module):
        inner = decoder.model
        self.embedding = inner.embed_tokens
        self.rotary_embedding, self.norm = inner.rotary_emb, _rms_norm(inner.norm)
        self.layers = [_Layer(layer) for layer in inner.layers]
        self.head = _Linears([decoder.lm_head])
        config, attention = decoder.config, inner.layers[0].self_attn
        self.head_dim, self.rotate_half = attention.head_dim, sys.modules[type(attention).__module__].rotate_half
        self.query_heads = config.num_attention_heads  # heads of the queries, then the keys, then the values
        self.qk_heads = config.num_attention_heads + config.num_key_value_heads
        self.intermediate = config.intermediate_size

    @classmethod
    def of(cls, decoder: nn.Module) -> StaticDecoder | None:
        """The step for `decoder` as its weights are now (rebuilt when a parameter is replaced or changed in place);
        None for a decoder it does not know (`ARCHITECTURES`, sdpa attention, plain or LoRA linear layers)."""
        key = tuple((p.data_ptr(), p._version) for p in decoder.parameters())
        with _BUILDING:
            built = _BUILT.get(decoder)
            if built is None or built[0] != key:
                built = (key, cls(decoder) if _supported(decoder) else None)
                _BUILT[decoder] = built
        return built[1]

    @torch.no_grad()
    def step(self, cache: StaticCache, tokens: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor
             ) -> torch.Tensor:
        """Logits (R, V) after feeding `tokens` (R,) at `positions` (R,), with `mask` (R, cached + 1) the attention
        mask over everything cached and this token; the keys and values go into `cache`."""
        hidden = self.embedding(tokens[:, None])  # (R, 1, H), as the stock layers see it
        cos, sin = (t.unsqueeze(1) for t in self.rotary_embedding(hidden, positions[:, None]))  # (R, 1, 1, D)
        cache.reserve(1)
        column, rows = cache.length, tokens.shape[0]
        # the stock causal mask for one query: none where no row is padded, else the padding, (R, 1, 1, cached)
        attention_mask = None if bool(mask.all()) else mask.bool()[:, None, None, :]
        heads = (rows, 1, -1, self.head_dim)
        for i, layer in enumerate(self.layers):
            residual, hidden = hidden, layer.input_norm(hidden)
            qkv = layer.qkv(hidden).view(heads).transpose(1, 2)  # (R, heads, 1, D)
            qk = qkv[:, :self.qk_heads]
            qk = qk * cos + self.rotate_half(qk) * sin  # the stock rotary function, on queries and keys at once
            query, key, value = qk[:, :self.query_heads], qk[:, self.query_heads:], qkv[:, self.qk_heads:]
            keys, values = cache.keys[i], cache.values[i]
            keys[:, :, column] = key[:, :, 0]
            values[:, :, column] = value[:, :, 0]
            out, _ = sdpa_attention_forward(layer.attention, query, keys[:, :, :column + 1],
                                            values[:, :, :column + 1], attention_mask, scaling=layer.scaling)
            hidden = residual + layer.o(out.reshape(rows, 1, -1))  # (R, 1, heads, D) -> (R, 1, H)
            residual, hidden = hidden, layer.post_norm(hidden)
            gate_up, split = layer.gate_up(hidden), self.intermediate
            hidden = residual + layer.down(layer.act(gate_up[..., :split]) * gate_up[..., split:])
        cache.length += 1
        return self.head(self.norm(hidden))[:, -1]


def _supported(decoder: nn.Module) -> bool:
    """A decoder `StaticDecoder` computes as its stock `forward` does: a known anatomy, sdpa attention, no sliding
    window, plain or LoRA linear layers, and every weight on one device (no `device_map` split or offload, whose
    hooks move activations between modules)."""
    config = decoder.config
    inner = getattr(decoder, "model", None)
    if (config.model_type not in ARCHITECTURES or config._attn_implementation != "sdpa" or inner is None
            or (getattr(config, "sliding_window", None) and getattr(config, "use_sliding_window", True))
            or len({p.device for p in decoder.parameters()}) != 1 or hasattr(decoder, "hf_device_map")):
        return False
    projections = [decoder.lm_head] + [getattr(layer.self_attn, f"{n}_proj") for layer in inner.layers for n in "qkvo"]
    projections += [getattr(layer.mlp, f"{n}_proj") for layer in inner.layers for n in ("gate", "up", "down")]
    return all(_supported_projection(p) for p in projections)


@dataclass
class StaticCache:
    """Keys and values of every layer in buffers of fixed capacity, (R, N_kv, C, D) each, of which the first
    `length` positions are filled."""

    decoder: StaticDecoder
    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    length: int

    @classmethod
    def of(cls, model, cache: object, steps: int) -> StaticCache | None:
        """`cache` (the stock dynamic cache of a prefill) copied into buffers with room for `steps` more positions;
        None where `model`'s decoder has no `StaticDecoder` or the cache is another kind."""
        decoder = StaticDecoder.of(model.decoder)
        if decoder is None or type(cache) is not DynamicCache or any(type(layer) is not DynamicLayer
                                                                    for layer in cache.layers):
            return None
        static = cls(decoder, [layer.keys for layer in cache.layers], [layer.values for layer in cache.layers],
                     cache.get_seq_length())
        static.reserve(max(steps, 1))  # copies into buffers of its own: the prefill's cache is never written
        return static

    def reserve(self, steps: int) -> None:
        """Make room for `steps` more positions (a decoding state read on for longer than it was made for)."""
        if self.keys[0].shape[2] >= self.length + steps:
            return
        for buffers in (self.keys, self.values):
            for i, old in enumerate(buffers):
                buffers[i] = old.new_empty(*old.shape[:2], self.length + steps, old.shape[3])
                buffers[i][:, :, :self.length] = old[:, :, :self.length]

    def __deepcopy__(self, memo: dict) -> StaticCache:
        """A copy of the keys and values on the same (shared, read-only) decoder step."""
        return StaticCache(self.decoder, [k.clone() for k in self.keys], [v.clone() for v in self.values], self.length)

    def reorder_cache(self, rows: torch.Tensor) -> None:
        """Keep the cache rows `rows` (beam search: the row each new hypothesis extends), as the stock cache does."""
        self.keys = [k.index_select(0, rows) for k in self.keys]
        self.values = [v.index_select(0, rows) for v in self.values]
