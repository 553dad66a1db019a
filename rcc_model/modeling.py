"""`RCCModel`: an encoder and a decoder (two copies of one stock HF causal LM) joined by bridges.

Glossary of shapes: B batch, W window, T prompt tokens, P slot positions in the decoder input,
S slots of one memory, K encoder hidden-state entries (L_enc + 1), H hidden size, V vocabulary.
"""

from __future__ import annotations

import copy
import hashlib
from array import array
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from rcc_model import bases
from rcc_model.bridges import Bridges
from rcc_model.config import RCCConfig
from rcc_model.generation import (
    DecodeState,
    SamplingParams,
    TextStream,
    decode_tokens,
    eos_token_ids,
    extend,
    prefill,
)
from rcc_model.injection import SlotInjector
from rcc_model.memory import CompressedMemory, MemoryMismatchError
from rcc_model.prompts import Prompt, instruction_frame, prompt_ids
from rcc_model.windows import num_slots, slot_positions, split_windows

TokenInput = str | Sequence[int] | torch.Tensor
MemoryInput = CompressedMemory | DecodeState


class RCCModel(nn.Module):
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
        # Parameters whose version counter moves (optimizer steps, load_state_dict) count as trained.
        self._base_versions = {name: p._version for name, p in self._base_parameters()}
        self._fingerprint_key: tuple | None = None
        self._fingerprint = ""
        self._injector = SlotInjector(bases.decoder_layers(decoder))

    # ------------------------------------------------------------------ construction and checkpoints
    @classmethod
    def from_base(cls, name_or_path: str, rate: int = 4, window: int = 256, *, dtype: str = "auto",
                  device: str | torch.device | None = None, device_map: str | dict | None = None,
                  cache_dir: str | Path | None = None, **config_kwargs) -> RCCModel:
        """A new, untrained RCC from a registered base name or a local HF folder."""
        config = RCCConfig(base=name_or_path, rate=rate, window=window, dtype=dtype, **config_kwargs)
        return cls._build(config, device=device, device_map=device_map, cache_dir=cache_dir)

    @classmethod
    def _build(cls, config: RCCConfig, *, device=None, device_map=None, cache_dir=None,
               dtype: str | None = None) -> RCCModel:
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
        if expected is not None and expected != config.base_fingerprint:
            raise ValueError(
                f"base model {config.base!r} (identity {config.base_fingerprint}) is not the one this "
                f"checkpoint was trained on (identity {expected}); load the checkpoint's own base"
            )
        return model

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, *, dtype: str | None = None,
                        device: str | torch.device | None = None, device_map: str | dict | None = None,
                        cache_dir: str | Path | None = None) -> RCCModel:
        """Load a checkpoint folder or a packaged name ("default") onto its base model."""
        from rcc_model.checkpoint import load_checkpoint

        return load_checkpoint(cls, name_or_path, dtype=dtype, device=device, device_map=device_map,
                               cache_dir=cache_dir)

    @classmethod
    def from_official(cls, path: str | Path, rate: int = 32, window: int = 2048, *,
                      dtype: str = "auto", device: str | torch.device | None = None) -> RCCModel:
        """Import the paper's released checkpoint (GPT-NeoX encoder + decoder in one state dict)."""
        from rcc_model.release import load_official

        return load_official(cls, path, rate=rate, window=window, dtype=dtype, device=device)

    def save_pretrained(self, directory: str | Path) -> Path:
        """Save config, bridges and the trained parameters (not the base weights), atomically."""
        from rcc_model.checkpoint import save_checkpoint

        return save_checkpoint(self, directory)

    # ------------------------------------------------------------------ identity
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
            if self._base_versions.get(name) != param._version:
                state[name] = param.detach()
        return state

    @property
    def fingerprint(self) -> str:
        """Identity of what this model computes: base identity + hash of the trained weights.

        Recomputed only when a parameter's version counter has moved (training, loading weights).
        """
        key = tuple(p._version for p in self.parameters())
        if key != self._fingerprint_key:
            digest = hashlib.sha256()
            for name, tensor in sorted(self.trained_state_dict().items()):
                digest.update(name.encode())
                digest.update(tensor.to(torch.bfloat16).cpu().contiguous().view(torch.uint8).numpy().tobytes())
            self._fingerprint = f"{self.config.base_fingerprint}-{digest.hexdigest()[:16]}"
            self._fingerprint_key = key
        return self._fingerprint

    def check_memory(self, memory: CompressedMemory) -> None:
        """Raise `MemoryMismatchError` unless `memory` was made by a model computing what this one does."""
        if memory.fingerprint != self.fingerprint:
            raise MemoryMismatchError(
                f"memory was made by model {memory.fingerprint} (base {memory.base!r}), not by this model "
                f"{self.fingerprint} (base {self.config.base!r}); compress the text again with this model"
            )
        if (memory.rate, memory.window) != (self.config.rate, self.config.window):
            raise MemoryMismatchError(
                f"memory has rate={memory.rate}, window={memory.window}; this model uses "
                f"rate={self.config.rate}, window={self.config.window}"
            )

    # ------------------------------------------------------------------ text <-> tokens
    def _require_tokenizer(self):
        if self.tokenizer is None:
            raise ValueError("this model has no tokenizer (its checkpoint folder has none): pass token ids")
        return self.tokenizer

    def encode_text(self, text: str) -> list[int]:
        return self._require_tokenizer()(text, add_special_tokens=False)["input_ids"]

    def _as_documents(self, inputs) -> tuple[list[list[int]], bool]:
        """Normalise compress() input to (token id lists, was it a batch)."""
        if isinstance(inputs, str):
            return [self.encode_text(inputs)], False
        if isinstance(inputs, torch.Tensor):
            if inputs.dim() == 1:
                return [inputs.tolist()], False
            if inputs.dim() == 2:
                return inputs.tolist(), True
            raise ValueError(f"token id tensors must be 1-D or 2-D, got shape {tuple(inputs.shape)}")
        items = list(inputs)
        if not items:
            raise ValueError("cannot compress an empty input")
        if all(isinstance(t, int) for t in items):
            return [items], False
        if all(isinstance(t, str) for t in items):
            return [self.encode_text(t) for t in items], True
        if all(isinstance(t, (list, tuple, torch.Tensor)) for t in items):
            return [t.tolist() if isinstance(t, torch.Tensor) else list(t) for t in items], True
        raise TypeError("compress() takes a string, a list of token ids, or a list of either")

    # ------------------------------------------------------------------ compression
    def encode_windows(self, window_ids: torch.Tensor, lengths: Sequence[int]) -> torch.Tensor:
        """Encode right-padded windows (B, W') and gather slot states (B, S_max, K, H).

        Right padding needs no mask: the encoder is causal, so real tokens never see the pads. Rows
        beyond a window's own slot count are zero. Differentiable (used by training).
        """
        out = self.encoder.base_model(input_ids=window_ids, output_hidden_states=True, use_cache=False)
        positions = [slot_positions(n, self.config.rate) for n in lengths]
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
                 progress: bool | None = None) -> CompressedMemory | list[CompressedMemory]:
        """Compress a string, a list of token ids, or a batch of either, into memory.

        Windows of all documents go through the encoder `batch_size` at a time; only slot states are
        kept, written into one preallocated tensor per document, so peak memory is the output plus one
        batch of activations, whatever the input length.
        """
        if batch_size < 1:
            raise ValueError(f"`batch_size` must be at least 1, got {batch_size}")
        documents, is_batch = self._as_documents(inputs)
        cfg = self.config
        per_doc = [split_windows(doc, cfg.window, cfg.padding) for doc in documents]
        storage = getattr(torch, cfg.memory_dtype)
        entries = len(bases.decoder_layers(self.encoder)) + 1
        hidden = bases.hidden_size(self.encoder)
        outputs = [  # (S_doc, K, H) per document
            torch.empty(sum(num_slots(len(w), cfg.rate) for w in wins), entries, hidden, dtype=storage,
                        device=self.device)
            for wins in per_doc
        ]
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
            states = self.encode_windows(ids.to(self.encoder.get_input_embeddings().weight.device), lengths)
            for row, ((doc, _), n) in enumerate(zip(chunk, lengths)):
                count = num_slots(n, cfg.rate)
                outputs[doc][cursor[doc]:cursor[doc] + count] = states[row, :count]
                cursor[doc] += count
        memories = [
            CompressedMemory(
                states=out, fingerprint=self.fingerprint, base=cfg.base, rate=cfg.rate, window=cfg.window,
                padding=cfg.padding, window_tokens=[len(w) for w in wins], token_count=len(doc),
                source_hash=hashlib.sha256(array("q", doc).tobytes()).hexdigest(),
            )
            for out, wins, doc in zip(outputs, per_doc, documents)
        ]
        return memories if is_batch else memories[0]

    # ------------------------------------------------------------------ decoder
    def decode(self, slot_states: torch.Tensor, slot_mask: torch.Tensor, input_ids: torch.Tensor,
               attention_mask: torch.Tensor, *, cache=None, use_cache: bool = False,
               logits_to_keep: int = 0):
        """Run the decoder on `[slots + prompt]` with the bridges applied (the prefill, or training).

        slot_states (B, P, K, H) with zero rows where slot_mask (B, P) is 0 (left padding);
        input_ids / attention_mask (B, T). Returns the stock HF output (logits over kept positions, cache).
        """
        states = slot_states.to(device=self.device, dtype=self.bridges.embed.weight.dtype)
        prompt_embeds = self.decoder.get_input_embeddings()(input_ids)
        inputs_embeds = torch.cat([self.bridges.embeddings(states).to(prompt_embeds.dtype), prompt_embeds], 1)
        mask = torch.cat([slot_mask, attention_mask], dim=1).to(self.device)
        position_ids = (mask.long().cumsum(-1) - 1).clamp(min=0)
        with self._injector.inject(self.bridges.layer_additions(states)):
            return self.decoder(inputs_embeds=inputs_embeds, attention_mask=mask, position_ids=position_ids,
                                cache=cache, use_cache=use_cache, logits_to_keep=logits_to_keep)

    @property
    def max_positions(self) -> int:
        """How many positions (slots + prompt + answer) the decoder can attend to."""
        return int(getattr(self.decoder.config, "max_position_embeddings", 2**31))

    # ------------------------------------------------------------------ generation
    def prefill_memory(self, memory: CompressedMemory) -> DecodeState:
        """Run a memory's slots through the decoder once; pass the result instead of the memory to answer
        many prompts without recomputing it."""
        with torch.no_grad():
            return prefill(self, [memory], [[]])

    def _start(self, memory: MemoryInput, prompt: Sequence[int], params: SamplingParams) -> DecodeState:
        if isinstance(memory, DecodeState):
            if memory.fingerprint != self.fingerprint:
                raise MemoryMismatchError("this prefilled memory was made by another model")
            return extend(self, memory.clone(), prompt)
        return prefill(self, [memory], [prompt], params.max_new_tokens)

    @torch.no_grad()
    def generate_ids(self, memory: MemoryInput | Sequence[CompressedMemory],
                     prompt_ids: Sequence[int] | Sequence[Sequence[int]] | None = None, *,
                     max_new_tokens: int = 256, temperature: float = 0.0, top_p: float = 1.0,
                     seed: int | None = None) -> list[int] | list[list[int]]:
        """Token ids generated from memory (+ prompt ids) until EOS or `max_new_tokens`; greedy by default.

        Pass lists of memories and prompts to generate for all of them in one padded batch.
        """
        params = SamplingParams(max_new_tokens, temperature, top_p, seed)
        if isinstance(memory, (CompressedMemory, DecodeState)):
            state = self._start(memory, list(prompt_ids or []), params)
            batch = False
        else:
            memories = list(memory)
            prompts = [list(p) for p in prompt_ids] if prompt_ids is not None else [[] for _ in memories]
            state = prefill(self, memories, prompts, params.max_new_tokens)
            batch = True
        eos = eos_token_ids(self)
        outputs: list[list[int]] = [[] for _ in range(state.logits.shape[0])]
        done = [False] * len(outputs)
        for tokens in decode_tokens(self, state, params):
            for row, token in enumerate(tokens.tolist()):
                if not done[row]:
                    done[row] = token in eos
                    if not done[row]:
                        outputs[row].append(token)
            if all(done):
                break
        return outputs if batch else outputs[0]

    def _text_rows(self, state: DecodeState, params: SamplingParams, stop: Sequence[str]
                   ) -> Iterator[tuple[int, str]]:
        """Yield (row, text piece) as tokens arrive; a row ends at EOS, at a stop string, or at the limit."""
        eos = eos_token_ids(self)
        streams = [TextStream(self._require_tokenizer(), stop) for _ in range(state.logits.shape[0])]
        done = [False] * len(streams)
        for tokens in decode_tokens(self, state, params):
            for row, token in enumerate(tokens.tolist()):
                if done[row]:
                    continue
                if token in eos:
                    done[row] = True
                    piece = streams[row].finish()
                else:
                    piece = streams[row].push(token)
                    done[row] = streams[row].stopped
                if piece:
                    yield row, piece
            if all(done):
                break
        for row, stream in enumerate(streams):
            if not stream.stopped and (piece := stream.finish()):
                yield row, piece

    def stream(self, memory: MemoryInput, prompt: Prompt = None, *, max_new_tokens: int = 256,
               temperature: float = 0.0, top_p: float = 1.0, seed: int | None = None,
               stop: Sequence[str] = ()) -> Iterator[str]:
        """Yield the answer's text piece by piece as it is generated."""
        params = SamplingParams(max_new_tokens, temperature, top_p, seed)
        with torch.no_grad():
            state = self._start(memory, prompt_ids(self.tokenizer, prompt), params)
            for _, piece in self._text_rows(state, params, stop):
                yield piece

    @torch.no_grad()
    def generate(self, memory: MemoryInput | Sequence[CompressedMemory], prompt: Prompt | list[Prompt] = None,
                 *, max_new_tokens: int = 256, temperature: float = 0.0, top_p: float = 1.0,
                 seed: int | None = None, stop: Sequence[str] = ()) -> str | list[str]:
        """Text generated from memory and a prompt (a string, token ids, or chat messages).

        A list of memories with a list of as many prompts (or None) generates for all pairs in one batch.
        """
        params = SamplingParams(max_new_tokens, temperature, top_p, seed)
        if isinstance(memory, (CompressedMemory, DecodeState)):
            state, rows = self._start(memory, prompt_ids(self.tokenizer, prompt), params), 1
        else:
            memories = list(memory)
            prompts = [None] * len(memories) if prompt is None else list(prompt)
            if len(prompts) != len(memories):
                raise ValueError(f"pass one prompt per memory: {len(memories)} memories, {len(prompts)} prompts")
            state = prefill(self, memories, [prompt_ids(self.tokenizer, p) for p in prompts],
                            params.max_new_tokens)
            rows = len(memories)
        texts = [""] * rows
        for row, piece in self._text_rows(state, params, stop):
            texts[row] += piece
        return texts[0] if isinstance(memory, (CompressedMemory, DecodeState)) else texts

    @torch.no_grad()
    def ask(self, memory: MemoryInput, question: str | None = None, *, max_new_tokens: int = 256,
            stop: Sequence[str] = (), **sampling) -> str:
        """Answer a question about the memory through the base model's chat template.

        `question=None` is the paper's instruction-reconstruction mode: the question was compressed with
        the context (`compress(context + "\n\n" + question)`); the decoder first regenerates it from
        memory, then answers. Only the answer is returned.
        """
        if question is not None:
            return self.generate(memory, [{"role": "user", "content": question}],
                                 max_new_tokens=max_new_tokens, stop=stop, **sampling)
        tokenizer = self._require_tokenizer()
        frame = instruction_frame(tokenizer)
        params = SamplingParams(max_new_tokens, **sampling)
        state = self._start(memory, prompt_ids(tokenizer, frame.header), params)
        text = TextStream(tokenizer, skip_special_tokens=False)
        end = tokenizer.eos_token or ""
        for tokens in decode_tokens(self, state, params):
            text.push(int(tokens[0]))
            _, found, answer = text.text.partition(frame.turn_end)
            if found and end and end in answer:
                break
        _, found, answer = text.text.partition(frame.turn_end)
        answer = answer.split(end)[0] if end else answer
        for s in stop:
            answer = answer.split(s)[0] if s else answer
        return answer.strip()

    @torch.no_grad()
    def reconstruct(self, memory: CompressedMemory, *, batch_size: int = 8) -> str | list[int]:
        """The text the memory holds, regenerated window by window (batched); token ids without a tokenizer.

        Each window is decoded from its own slots, as in training, so length is not limited by the
        decoder's position range.
        """
        self.check_memory(memory)
        ids: list[int] = []
        windows = memory.windows()
        for start in range(0, len(windows), batch_size):
            chunk = windows[start:start + batch_size]
            rows = self.generate_ids(chunk, max_new_tokens=max(m.token_count for m in chunk))
            for window, row in zip(chunk, rows):
                ids.extend(row[: window.token_count])
        if self.tokenizer is None:
            return ids
        return self.tokenizer.decode(ids, skip_special_tokens=True)
