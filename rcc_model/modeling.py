"""`RCCModel`: an encoder and a decoder (two copies of one stock HF causal LM) joined by bridges.

Glossary of shapes: B batch, W window, T prompt tokens, P slot positions in the decoder input,
S slots of one memory, K encoder hidden-state entries (L_enc + 1), H hidden size, V vocabulary.
"""

from __future__ import annotations

import copy
import hashlib
from array import array
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from rcc_model import bases
from rcc_model.bridges import Bridges
from rcc_model.config import RCCConfig
from rcc_model.generation import GenerationMixin
from rcc_model.injection import SlotInjector
from rcc_model.memory import CompressedMemory, MemoryMismatchError
from rcc_model.prompts import token_ids
from rcc_model.windows import num_slots, slot_positions, split_windows

TokenInput = str | Sequence[int] | torch.Tensor


def _length_groups(slots: Sequence[int], tokens: Sequence[int]) -> list[list[int]]:
    """Rows of a training batch in at most two decoder calls, split where padding wastes the most: one
    many-window QA context would otherwise pad every one-window example of the batch to its slot count, and
    one whole-window target every short span to its length."""
    order = sorted(range(len(slots)), key=lambda r: (slots[r], tokens[r]))

    def cost(rows: list[int]) -> int:
        return len(rows) * (max(slots[r] for r in rows) + max(tokens[r] for r in rows)) if rows else 0

    best = min(range(len(order)), key=lambda k: cost(order[:k]) + cost(order[k:]))
    return [group for group in (order[:best], order[best:]) if group]


def weights_digest(tensors: dict[str, torch.Tensor]) -> str:
    """Short hash of named tensors, as bfloat16 bytes (so a bf16 export hashes like its fp32 source)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(tensors.items()):
        digest.update(name.encode())
        digest.update(tensor.to(torch.bfloat16).cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


class RCCModel(nn.Module, GenerationMixin):
    """Recurrent Context Compression over any HF decoder-only model.

    The encoder reads windows of `config.window` tokens independently and keeps, from every hidden-state
    entry, the state of the last token of each block of `config.rate` tokens. The decoder reads
    `[slots + prompt]`: slot embeddings are `B_embed(E_0)`, and after decoder layer i the slots get
    `B_i(E_{layer_map[i]})` added.

    Example:
        >>> model = RCCModel.from_pretrained("default")
        >>> memory = model.compress(open("report.txt").read())
        >>> model.ask(memory, "Who signed the report?")
    """

    def __init__(self, config: RCCConfig, encoder: nn.Module, decoder: nn.Module, tokenizer=None):
        super().__init__()
        self.config = config
        self.encoder = encoder
        self.decoder = decoder
        self.tokenizer = tokenizer
        num_entries = len(bases.decoder_layers(encoder)) + 1
        layer_map = config.resolved_layer_map(len(bases.decoder_layers(decoder)), num_entries)
        self.bridges = Bridges(bases.hidden_size(encoder), bases.hidden_size(decoder), layer_map,
                               config.bridge_init)
        self.bridges.to(device=self.device, dtype=self.decoder.get_input_embeddings().weight.dtype)
        if config.base_fingerprint is None:
            config.base_fingerprint = bases.base_fingerprint(decoder)
        # Base parameters by identity (adapters may rename them), with their version counters: one whose
        # counter moves (optimizer step, load_state_dict) or that is new (an adapter) counts as trained.
        self._base_versions = {id(p): (p, p._version) for _, p in self._base_parameters()}
        self._fingerprint_key: tuple | None = None
        self._fingerprint = ""
        self._sentence_ends: frozenset[int] | None = None  # token ids that end a sentence (split="sentence")
        self._injector = SlotInjector(bases.decoder_layers(decoder))

    # ------------------------------------------------------------------ construction and checkpoints
    @classmethod
    def from_base(cls, name_or_path: str, rate: int = 4, window: int = 256, *, dtype: str | torch.dtype = "auto",
                  device: str | torch.device | None = None, device_map: str | dict | None = None,
                  cache_dir: str | Path | None = None, **config_kwargs) -> RCCModel:
        """A new, untrained RCC from a registered base name or a local HF folder. `dtype`, here and wherever the
        package takes one, is a torch dtype or its name ("auto", "float32", "bfloat16", "float16")."""
        config = RCCConfig(base=name_or_path, rate=rate, window=window, dtype=dtype, **config_kwargs)
        return cls._build(config, device=device, device_map=device_map, cache_dir=cache_dir)

    @classmethod
    def _build(cls, config: RCCConfig, *, device=None, device_map=None, cache_dir=None,
               dtype: str | torch.dtype | None = None) -> RCCModel:
        path = bases.resolve_base(config.base, cache_dir)
        target = torch.device(device) if device is not None else bases.default_device()
        torch_dtype = bases.resolve_dtype(dtype or config.dtype, target)
        encoder = bases.load_causal_lm(path, torch_dtype, device_map)
        decoder = copy.deepcopy(encoder)
        if device_map is None:
            encoder.to(target)
            decoder.to(target)
        expected = config.base_fingerprint
        config = RCCConfig.from_dict({**config.to_dict(), "base_fingerprint": None})
        model = cls(config, encoder, decoder, bases.load_tokenizer(path))
        if config.lora:
            from rcc_model.adapters import add_lora

            add_lora(model, config.lora)
        if expected is not None and expected != config.base_fingerprint:
            raise ValueError(
                f"base model {config.base!r} (identity {config.base_fingerprint}) is not the one this "
                f"checkpoint was trained on (identity {expected}); load the checkpoint's own base"
            )
        return model

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, *, dtype: str | torch.dtype | None = None,
                        device: str | torch.device | None = None, device_map: str | dict | None = None,
                        cache_dir: str | Path | None = None, rate: int | None = None) -> RCCModel:
        """Load a checkpoint folder or a packaged name ("default") onto its base model.

        `rate` picks the default among a multi-rate checkpoint's `trained_rates`; any other rate reads the
        checkpoint where it was never trained: a measurement tool (BLEU vs rate), since quality at a rate
        comes from training at that rate.
        """
        from rcc_model.checkpoint import load_checkpoint

        return load_checkpoint(cls, name_or_path, dtype=dtype, device=device, device_map=device_map,
                               cache_dir=cache_dir, rate=rate)

    @classmethod
    def from_official(cls, path: str | Path, rate: int = 32, window: int = 2048, *,
                      dtype: str | torch.dtype = "auto", device: str | torch.device | None = None) -> RCCModel:
        """Import the paper's released checkpoint (GPT-NeoX encoder + decoder in one state dict)."""
        from rcc_model.release import load_official

        return load_official(cls, path, rate=rate, window=window, dtype=dtype, device=device)

    def save_pretrained(self, directory: str | Path, dtype: str | torch.dtype | None = None) -> Path:
        """Save config, bridges and the trained parameters (not the base weights), atomically; `dtype`
        (e.g. torch.bfloat16 or "bfloat16") stores floating-point weights in that precision."""
        from rcc_model.checkpoint import save_checkpoint

        return save_checkpoint(self, directory, None if dtype is None else bases.resolve_dtype(dtype, self.device))

    # ------------------------------------------------------------------ identity
    @property
    def _no_split_modules(self) -> list[str]:
        """The base's block classes, which FSDP's transformer wrap policy (`accelerate`) shards one by one."""
        return list(getattr(self.decoder, "_no_split_modules", None) or [])

    @property
    def device(self) -> torch.device:
        return self.decoder.get_input_embeddings().weight.device

    def _base_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        for prefix, module in (("encoder", self.encoder), ("decoder", self.decoder)):
            for name, param in module.named_parameters():
                yield f"{prefix}.{name}", param

    def trained_state_dict(self) -> dict[str, torch.Tensor]:
        """Bridges plus every encoder/decoder parameter changed since the base was loaded."""
        state = {f"bridges.{k}": v for k, v in self.bridges.state_dict().items()}
        for name, param in self._base_parameters():
            known = self._base_versions.get(id(param))
            if known is None or known[1] != param._version:
                state[name] = param.detach()
        return state

    @contextmanager
    def _rewriting_base_in_place(self) -> Iterator[None]:
        """A block that writes the same values into base parameters (DDP's broadcast of rank 0's weights when
        `accelerate` wraps the model): what was unchanged before it still counts as the base afterwards."""
        unchanged = [p for p, version in self._base_versions.values() if p._version == version]
        yield
        for param in unchanged:
            self._base_versions[id(param)] = (param, param._version)

    @property
    def fingerprint(self) -> str:
        """Identity of what this model computes: base identity + hash of the trained weights.

        Recomputed only when a parameter's version counter has moved (training, loading weights).
        """
        key = tuple(p._version for p in self.parameters())
        if key != self._fingerprint_key:
            self._fingerprint = f"{self.config.base_fingerprint}-{weights_digest(self.trained_state_dict())}"
            self._fingerprint_key = key
        return self._fingerprint

    def check_memory(self, memory: CompressedMemory) -> None:
        """Raise `MemoryMismatchError` unless `memory` was made by a model computing what this one does."""
        if memory.fingerprint != self.fingerprint:
            raise MemoryMismatchError(
                f"memory was made by model {memory.fingerprint} (base {memory.base!r}), not by this model "
                f"{self.fingerprint} (base {self.config.base!r}); compress the text again with this model"
            )
        if memory.rate not in self.config.trained_rates or memory.window != self.config.window:
            raise MemoryMismatchError(
                f"memory has rate={memory.rate}, window={memory.window}; this model reads "
                f"rate={'/'.join(map(str, self.config.trained_rates))}, window={self.config.window}"
            )

    # ------------------------------------------------------------------ text <-> tokens
    def _require_tokenizer(self):
        if self.tokenizer is None:
            raise ValueError("this model has no tokenizer (its checkpoint folder has none): pass token ids")
        return self.tokenizer

    def encode_text(self, text: str) -> list[int]:
        return self._require_tokenizer()(text, add_special_tokens=False)["input_ids"]

    def _windows_of(self, ids: Sequence[int]) -> list[list[int]]:
        """The encoder windows of one document's token ids (`config.window`, `padding`, `split`)."""
        cuts: frozenset[int] = frozenset()
        if self.config.split == "sentence" and self.tokenizer is not None:
            if self._sentence_ends is None:
                pieces = self.tokenizer.batch_decode([[i] for i in range(len(self.tokenizer))])
                self._sentence_ends = frozenset(i for i, piece in enumerate(pieces)
                                                if "\n" in piece or piece.rstrip().endswith((".", "!", "?")))
            cuts = self._sentence_ends
        return split_windows(ids, self.config.window, self.config.padding, cuts)

    def window_ids(self, document: str | Sequence[int]) -> list[list[int]]:
        """The token ids of each encoder window of a document (text or token ids), in memory order. Windows are
        encoded independently, so `compress(window_ids(doc)[j])` is window j of `compress(doc)`: what an index
        that stores text compresses when a question reads only some windows."""
        return self._windows_of(self.encode_text(document) if isinstance(document, str) else document)

    def window_texts(self, document: str | Sequence[int]) -> list[str]:
        """The text each encoder window of a document (text or token ids) holds, in memory order (what
        `rcc_model.reading` ranks)."""
        return [self._require_tokenizer().decode(window) for window in self.window_ids(document)]

    @property
    def vocab_size(self) -> int:
        """How many token ids the encoder and decoder embed (ids 0 to vocab_size - 1)."""
        return min(self.encoder.get_input_embeddings().num_embeddings,
                   self.decoder.get_input_embeddings().num_embeddings)

    def _as_documents(self, inputs) -> tuple[list[list[int]], bool]:
        """Normalise compress() input to (token id lists, was it a batch); bytes, bools, non-integer tensors and
        ids outside the vocabulary are refused here (`token_ids`)."""
        if isinstance(inputs, str):
            return [self.encode_text(inputs)], False
        if isinstance(inputs, torch.Tensor):
            if inputs.dtype == torch.bool or inputs.is_floating_point() or inputs.is_complex():
                raise TypeError(f"token id tensors hold integers, got dtype {inputs.dtype}")
            if inputs.dim() not in (1, 2):
                raise ValueError(f"token id tensors must be 1-D or 2-D, got shape {tuple(inputs.shape)}")
            rows, is_batch = (inputs.tolist(), True) if inputs.dim() == 2 else ([inputs.tolist()], False)
        elif isinstance(inputs, (bytes, bytearray)):
            raise TypeError("compress() got bytes: decode them to text first (e.g. data.decode('utf-8'))")
        else:
            items = list(inputs)
            if not items:
                raise ValueError("cannot compress an empty input")
            if all(isinstance(t, str) for t in items):
                return [self.encode_text(t) for t in items], True
            is_batch = all(isinstance(t, (list, tuple, torch.Tensor, bytes, bytearray)) for t in items)
            rows = [t.tolist() if isinstance(t, torch.Tensor) else t for t in items] if is_batch else [items]
        return [token_ids(row, self.vocab_size, "compress()") for row in rows], is_batch

    # ------------------------------------------------------------------ compression
    def encode_windows(self, window_ids: torch.Tensor, lengths: Sequence[int], rate: int | None = None
                       ) -> torch.Tensor:
        """Encode right-padded windows (B, W') and gather slot states (B, S_max, K, H), one per `rate` tokens.

        Right padding needs no mask: the encoder is causal, so real tokens never see the pads. Rows
        beyond a window's own slot count are zero. Differentiable (used by training).
        """
        out = self.encoder.base_model(input_ids=window_ids, output_hidden_states=True, use_cache=False)
        rate = self.config.check_rate(rate)
        positions = [slot_positions(n, rate) for n in lengths]
        max_slots = max(len(p) for p in positions)
        index = torch.zeros(len(lengths), max_slots, dtype=torch.long)
        valid = torch.zeros(len(lengths), max_slots, dtype=torch.bool)
        for row, pos in enumerate(positions):
            index[row, : len(pos)] = torch.tensor(pos)
            valid[row, : len(pos)] = True
        index, valid = index.to(window_ids.device), valid.to(window_ids.device)
        hidden = out.hidden_states[0].shape[-1]
        gather = index[..., None].expand(-1, -1, hidden)  # (B, S_max, H)
        states = torch.stack([h.gather(1, gather.to(h.device)) for h in out.hidden_states], dim=2)
        return states * valid[:, :, None, None].to(states.device, states.dtype)

    @torch.no_grad()
    def compress(self, inputs: TokenInput | Sequence[TokenInput], *, batch_size: int = 8,
                 progress: bool | None = None, rate: int | None = None, offset: int = 0,
                 keep_text: bool | None = None) -> CompressedMemory | list[CompressedMemory]:
        """Compress a string, a list of token ids, or a batch of either, into memory, at `rate` (the model's
        default, or another of its `trained_rates`). With `offset`, the first `offset` tokens of each
        document are a window of their own, so every slot boundary after them moves by `offset`: the same
        text at another alignment (`aligned_views`). The memory keeps each window's text
        (`CompressedMemory.window_texts`) unless `keep_text` is False (default: where the model has a tokenizer), so
        that a question can rank its windows and read the best as text (`rcc_model.reading`); the text costs a
        few bytes per token beside the slots' kilobytes.

        Windows of all documents go through the encoder `batch_size` at a time; only slot states are
        kept, written into one preallocated tensor per document, so peak memory is the output plus one
        batch of activations, whatever the input length.
        """
        if batch_size < 1:
            raise ValueError(f"`batch_size` must be at least 1, got {batch_size}")
        documents, is_batch, per_doc, rate, decode = self._plan(inputs, rate, offset, keep_text)
        outputs = self._slot_tensors(per_doc, rate, self.device)  # (S_doc, K, H) per document
        jobs = [(d, w) for d, wins in enumerate(per_doc) for w in wins]
        cursor = [0] * len(documents)
        batches = range(0, len(jobs), batch_size)
        show = None if (progress is None and len(batches) > 4) else (not progress)
        self.encoder.eval()
        for start in tqdm(batches, desc="compressing", unit="batch", disable=show):
            chunk = jobs[start:start + batch_size]
            lengths = [len(w) for _, w in chunk]
            ids = torch.zeros(len(chunk), max(lengths), dtype=torch.long)
            for row, (_, w) in enumerate(chunk):
                ids[row, : len(w)] = torch.tensor(w)
            states = self.encode_windows(ids.to(self.encoder.get_input_embeddings().weight.device), lengths, rate)
            for row, ((doc, _), n) in enumerate(zip(chunk, lengths)):
                count = num_slots(n, rate)
                outputs[doc][cursor[doc]:cursor[doc] + count] = states[row, :count]
                cursor[doc] += count
        memories = self._memories(outputs, per_doc, documents, rate, decode)
        return memories if is_batch else memories[0]

    def outline(self, inputs: TokenInput | Sequence[TokenInput], *, rate: int | None = None
                ) -> CompressedMemory | list[CompressedMemory]:
        """What `compress(inputs, rate=rate)` would return, its states on PyTorch's meta device (a shape, no
        data): windows, their token counts and texts, slots, source hash, from the tokenizer alone. Ranking a
        memory's windows reads only these, so an index that stores text ranks every document and compresses
        only the ones a question reads."""
        documents, is_batch, per_doc, rate, decode = self._plan(inputs, rate, 0, None)
        memories = self._memories(self._slot_tensors(per_doc, rate, "meta"), per_doc, documents, rate, decode)
        return memories if is_batch else memories[0]

    def _plan(self, inputs: TokenInput | Sequence[TokenInput], rate: int | None, offset: int,
              keep_text: bool | None) -> tuple[list[list[int]], bool, list[list[list[int]]], int, Callable | None]:
        """(token ids per document, was it a batch, windows per document, rate, window decoder or None) of a
        compression: everything but the encoder's work."""
        documents, is_batch = self._as_documents(inputs)
        if keep_text is None:
            keep_text = self.tokenizer is not None
        decode = self._require_tokenizer().decode if keep_text else None
        cfg, rate = self.config, self.config.check_rate(rate)
        if not 0 <= offset < cfg.window:
            raise ValueError(f"`offset` must be in [0, {cfg.window}), got {offset}")
        per_doc = [self._windows_of(doc[:offset]) + self._windows_of(doc[offset:]) if 0 < offset < len(doc)
                   else self._windows_of(doc) for doc in documents]  # a text no longer than `offset`: as it is
        return documents, is_batch, per_doc, rate, decode

    def _slot_tensors(self, per_doc: list[list[list[int]]], rate: int, device: str | torch.device
                      ) -> list[torch.Tensor]:
        """One uninitialised (S_doc, K, H) tensor of the memory dtype per document, for its windows' slots."""
        entries = len(bases.decoder_layers(self.encoder)) + 1
        hidden = bases.hidden_size(self.encoder)
        return [torch.empty(sum(num_slots(len(w), rate) for w in wins), entries, hidden,
                            dtype=getattr(torch, self.config.memory_dtype), device=device) for wins in per_doc]

    def _memories(self, outputs: list[torch.Tensor], per_doc: list[list[list[int]]], documents: list[list[int]],
                  rate: int, decode: Callable | None) -> list[CompressedMemory]:
        cfg, fingerprint = self.config, self.fingerprint
        return [
            CompressedMemory(
                states=out, fingerprint=fingerprint, base=cfg.base, rate=rate, window=cfg.window,
                padding=cfg.padding, window_tokens=[len(w) for w in wins], token_count=len(doc),
                source_hash=hashlib.sha256(array("q", doc).tobytes()).hexdigest(),
                window_texts=[decode(w) for w in wins] if decode else None,
            )
            for out, wins, doc in zip(outputs, per_doc, documents)
        ]

    def empty_memory(self) -> CompressedMemory:
        """A memory of nothing: generation from it is the base decoder (adapters off) on the prompt."""
        cfg = self.config
        states = torch.zeros(0, len(bases.decoder_layers(self.encoder)) + 1, bases.hidden_size(self.encoder),
                             dtype=getattr(torch, cfg.memory_dtype), device=self.device)
        return CompressedMemory(states=states, fingerprint=self.fingerprint, base=cfg.base, rate=cfg.rate,
                                window=cfg.window, padding=cfg.padding, window_tokens=[], token_count=0,
                                source_hash=hashlib.sha256(b"").hexdigest())

    # ------------------------------------------------------------------ decoder
    def decode(self, slot_states: torch.Tensor, slot_mask: torch.Tensor, input_ids: torch.Tensor,
               attention_mask: torch.Tensor, *, cache=None, use_cache: bool = False,
               logits_to_keep: int | torch.Tensor = 0):
        """Run the decoder on `[slots + prompt]` with the bridges applied (the prefill, or training).

        slot_states (B, P, K, H) with zero rows where slot_mask (B, P) is 0 (left padding);
        input_ids / attention_mask (B, T). Returns the stock HF output (logits over kept positions, cache):
        `logits_to_keep` an int keeps the last n positions, a 1D tensor the positions it holds: (B, n, V).
        """
        states = slot_states.to(device=self.device, dtype=self.bridges.embed.weight.dtype)
        prompt_embeds = self.decoder.get_input_embeddings()(input_ids)
        inputs_embeds = torch.cat([self.bridges.embeddings(states).to(prompt_embeds.dtype), prompt_embeds], 1)
        mask = torch.cat([slot_mask, attention_mask], dim=1).to(self.device)
        position_ids = (mask.long().cumsum(-1) - 1).clamp(min=0)
        with self._injector.inject(self.bridges.layer_additions(states)):
            return self.decoder(inputs_embeds=inputs_embeds, attention_mask=mask, position_ids=position_ids,
                                cache=cache, use_cache=use_cache, logits_to_keep=logits_to_keep)

    def forward(self, window_ids: torch.Tensor, window_lengths: Sequence[int], window_owner: Sequence[int],
                input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor,
                train_encoder: bool = True, window_states: torch.Tensor | None = None,
                rate: int | None = None) -> torch.Tensor:
        """Training loss: compress each example's windows at `rate`, decode `[slots + input_ids]`,
        cross-entropy on `labels` (-100 = ignored). Windows (N_w, W) belong to examples by `window_owner`, in
        order. `window_states` (N_w, S_w, K, H), e.g. from a slot cache, replace the encoder pass."""
        rate = self.config.check_rate(rate)
        if window_states is None:
            with torch.set_grad_enabled(train_encoder and torch.is_grad_enabled()):
                window_states = self.encode_windows(window_ids, window_lengths, rate)  # (N_w, S_w, K, H)
        per_example: list[list[torch.Tensor]] = [[] for _ in range(input_ids.shape[0])]
        for row, (owner, length) in enumerate(zip(window_owner, window_lengths)):
            per_example[owner].append(window_states[row, : num_slots(length, rate)])
        states = [torch.cat(parts) for parts in per_example]
        lengths = (attention_mask.cumsum(dim=1).argmax(dim=1) + 1).tolist()  # through each row's last token
        targets = (labels != -100).sum().clamp(min=1)
        loss = window_states.new_zeros((), dtype=torch.float32)
        for rows in _length_groups([s.shape[0] for s in states], lengths):
            slots, tokens = max(states[r].shape[0] for r in rows), max(lengths[r] for r in rows)
            padded = window_states.new_zeros(len(rows), slots, *window_states.shape[2:])  # (B_g, P, K, H)
            slot_mask = torch.zeros(len(rows), slots, dtype=torch.long, device=input_ids.device)
            for i, r in enumerate(rows):
                padded[i, slots - states[r].shape[0]:] = states[r]
                slot_mask[i, slots - states[r].shape[0]:] = 1
            index = torch.tensor(rows, device=input_ids.device)
            group_labels = labels[index, :tokens]
            # full-vocabulary logits only at the input positions some row scores (position P-1+j predicts
            # input_ids[:, j]), gathered into one contiguous product rather than one per row: a faster step.
            # Positions as a 1D tensor, which every HF causal LM takes.
            kept = (group_labels != -100).any(dim=0).nonzero().squeeze(1)  # (n,)
            out = self.decode(padded, slot_mask, input_ids[index, :tokens], attention_mask[index, :tokens],
                              logits_to_keep=kept + slots - 1)
            loss = loss + nn.functional.cross_entropy(out.logits.flatten(0, 1).float(),  # (B_g x n, V)
                                                      group_labels[:, kept].flatten(), ignore_index=-100,
                                                      reduction="sum")
        return loss / targets

    @property
    def max_positions(self) -> int:
        """How many positions (slots + prompt + answer) the decoder can attend to."""
        return int(getattr(self.decoder.config, "max_position_embeddings", 2**31))
