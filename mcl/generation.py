"""Greedy decoding near the memory bound: a static KV cache, and on CUDA one CUDA graph per step.

Transformers' `generate` with its dynamic cache spends most of a large model's decode step in
Python and kernel launches (the cache grows by concatenation, every step re-plans the masks and
runs the logits processors). Here the cache is transformers' own `StaticCache`, allocated once
and reused by every batch of the same shape; the prefill runs the model as `generate` would (same
position ids, same `logits_to_keep=1`), and each decode step (language model, output head,
argmax, end-of-sequence bookkeeping) is a fixed sequence of kernels on fixed buffers, captured
once as a CUDA graph and replayed. Decoding stops as soon as every sequence has ended.

Attention reads only the cache slots in use, in windows of CACHE_BUCKET slots: the prefill
attends over the prompt's own slots (so SDPA's flash kernel serves an unpadded batch, as in
`generate`), and each decode step over the smallest window that holds every written slot, one
CUDA graph per window, instead of all the slots allocated for the longest answer. (SDPA's own
kernel choice is kept: on an H200 at LLaVA-1.5-7B shapes it is cuDNN's, which read the cache at
~4.1 TB/s; the memory-efficient kernel's step was 29% slower; experiments/results/
eval_gpu_h200.md.)

The answers are `generate`'s greedy answers: the same token ids in fp32 on the CPU
(tests/test_generation.py, tiny backbones). In bf16 on a GPU a decode step attends over a
window with masked slots, so kernels differ and near-ties can flip (experiments/bench_gpu.py
counts the identical answers).
"""

from __future__ import annotations

import warnings

import torch
from transformers import StaticCache
from transformers.cache_utils import StaticLayer

# Cache lengths are rounded up to this, and a cache up to this much longer than needed is kept:
# nearby prompt lengths share one graph. It is also the width of the attention windows: small,
# since a step reads its whole window, masked slots too; capturing again costs a few warm-up
# steps.
CACHE_BUCKET = 64
REUSE_SLACK = CACHE_BUCKET


def bucketed(slots: int) -> int:
    """`slots` rounded up to a multiple of CACHE_BUCKET: a cache's length, an attention window."""
    return -(-slots // CACHE_BUCKET) * CACHE_BUCKET


class WindowedLayer(StaticLayer):
    """transformers' `StaticLayer` whose attention (and mask) covers only the first `window`
    slots (None: all): writes go to the full buffers at the same slots, reads see a view."""

    window: int | None = None

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs
               ) -> tuple[torch.Tensor, torch.Tensor]:
        keys, values = super().update(key_states, value_states, *args, **kwargs)
        if self.window is None:
            return keys, values
        return keys[:, :, : self.window], values[:, :, : self.window]

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return (self.max_cache_len if self.window is None else self.window), 0


class GreedyDecoder:
    """Greedy answers from a causal LM with a static cache; one instance per model.

    `model` is a transformers model whose forward takes `cache`, `position_ids` and
    `logits_to_keep` (LLaVA, Llama, ...); `language_model` and `head` are its decoder stack and
    output layer, which the decode step calls directly (no image inputs after the prefill).
    `cuda_graphs`: capture the decode step on CUDA (auto: on whenever the model is on CUDA).
    """

    def __init__(self, model, language_model, head, eos_token_id: int, pad_token_id: int,
                 cuda_graphs: bool | None = None) -> None:
        self.model, self.language_model, self.head = model, language_model, head
        self.eos, self.pad = int(eos_token_id), int(pad_token_id)
        self.cuda_graphs = cuda_graphs
        self._shape: tuple | None = None  # (batch, dtype, device, weights, cache length)
        self._graphs: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}  # by window
        self.window = 0  # the slots the next step's attention reads
        self.graph_failed: str | None = None  # why capture failed, if it did (eager from then)

    # ------------------------------------------------------------------ buffers

    def _buffers(self, batch: int, needed: int, dtype: torch.dtype, device: torch.device
                 ) -> None:
        """(Re)allocate the cache and the step's fixed inputs for this shape; one shape is kept,
        so memory holds one cache at a time (one up to REUSE_SLACK slots longer is kept)."""
        # The graph holds the addresses of the weights it was captured with: a replaced module
        # or parameter (a new adapter, a merge) means capturing again.
        shape = (batch, dtype, device, self._weights())
        if (self._shape is not None and self._shape[:-1] == shape
                and needed <= self._shape[-1] <= needed + REUSE_SLACK):
            return
        cache_len = bucketed(needed)
        shape = (*shape, cache_len)
        self._graphs = {}
        self.cache = None
        if device.type == "cuda":
            torch.cuda.empty_cache()
        self.cache = StaticCache(config=self.model.config, max_cache_len=cache_len)
        # Windowed reads where every layer is a plain full-attention one (sliding-window layers
        # keep their own masks and read all their slots).
        if all(type(la) is StaticLayer for la in self.cache.layers):
            self.cache.layers = [WindowedLayer(max_cache_len=cache_len) for _ in self.cache.layers]
        self.token = torch.full((batch, 1), self.pad, dtype=torch.long, device=device)
        self.position = torch.zeros((batch, 1), dtype=torch.long, device=device)
        self.valid = torch.zeros((batch, cache_len), dtype=torch.bool, device=device)
        self.slot = torch.zeros((), dtype=torch.long, device=device)  # cache slot being written
        self.unfinished = torch.ones(batch, dtype=torch.bool, device=device)
        self.block_eos = torch.zeros((), dtype=torch.bool, device=device)  # min_new_tokens
        self._shape = shape

    def _weights(self) -> tuple:
        return tuple((id(m), *(p.data_ptr() for p in m.parameters(recurse=False)))
                     for part in (self.language_model, self.head) for m in part.modules())

    def _hooked(self) -> bool:
        """Whether a forward hook may change the step between calls (a method's per-batch
        weights): a graph would replay the first batch's, so the step then runs eagerly."""
        return any(m._forward_hooks or m._forward_pre_hooks
                   for part in (self.language_model, self.head) for m in part.modules())

    # ------------------------------------------------------------------ the step

    def _choose(self, logits: torch.Tensor) -> torch.Tensor:
        """Next tokens from last-position logits, as `generate`'s greedy search: the end token
        blocked while `block_eos`, argmax, padding after a sequence ended."""
        logits = logits.float()
        eos_column = torch.arange(logits.shape[-1], device=logits.device) == self.eos
        logits = logits.masked_fill(eos_column & self.block_eos, float("-inf"))
        token = torch.where(self.unfinished, logits.argmax(-1), self.pad)
        self.unfinished &= token != self.eos
        return token

    def _set_window(self, window: int | None) -> None:
        """Let attention read the first `window` slots (None: all; always all where the cache's
        layers are not windowed, see `_buffers`)."""
        if not isinstance(self.cache.layers[0], WindowedLayer):  # all layers are, or none
            window = None
        else:
            for layer in self.cache.layers:
                layer.window = window
        self.window = self._shape[-1] if window is None else window

    def _step(self) -> torch.Tensor:
        """One decode step on the fixed buffers, with no host synchronisation (capturable)."""
        # The keys this token sees: the prompt's real tokens, those generated, and itself.
        self.valid.index_fill_(1, self.slot.view(1), True)
        hidden = self.language_model(input_ids=self.token,
                                     attention_mask=self.valid[:, None, None, :self.window],
                                     position_ids=self.position, cache=self.cache,
                                     use_cache=True).last_hidden_state
        token = self._choose(self.head(hidden[:, -1]))
        self.token.copy_(token[:, None])
        self.position += 1
        self.slot += 1
        return token

    def _capture(self) -> tuple[torch.cuda.CUDAGraph, torch.Tensor]:
        """Record `_step` as a CUDA graph (after warm-up runs on a side stream, as PyTorch's
        CUDA-graph guide asks); the caller restores the state the warm-up changed."""
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):
                self._step()
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = self._step()
        return graph, out

    def _graph_for_window(self) -> tuple[torch.cuda.CUDAGraph, torch.Tensor]:
        """This window's graph, captured on first use."""
        if self.window not in self._graphs:
            saved = self._state()
            try:
                self._graphs[self.window] = self._capture()
            finally:
                self._restore(saved)
        return self._graphs[self.window]

    def _run_step(self) -> torch.Tensor:
        use_graphs = self.cuda_graphs if self.cuda_graphs is not None else \
            self.slot.device.type == "cuda"
        if not use_graphs or self.graph_failed or self._hooked():
            return self._step()
        try:
            graph, out = self._graph_for_window()
        except Exception as err:  # keep answering correctly, only slower; say why once
            self.graph_failed = f"{type(err).__name__}: {err}"
            warnings.warn(f"CUDA-graph capture of the decode step failed ({self.graph_failed});"
                          " decoding eagerly with the static cache", stacklevel=2)
            return self._step()
        graph.replay()
        return out

    def _state(self) -> list[torch.Tensor]:
        layers = self.cache.layers
        return [t.clone() for t in (self.token, self.position, self.valid, self.slot,
                                    self.unfinished, *(la.cumulative_length for la in layers))]

    def _restore(self, saved: list[torch.Tensor]) -> None:
        layers = self.cache.layers
        for target, value in zip((self.token, self.position, self.valid, self.slot,
                                  self.unfinished, *(la.cumulative_length for la in layers)),
                                 saved, strict=True):
            target.copy_(value)

    # ------------------------------------------------------------------ generation

    @torch.no_grad()
    def generate(self, attention_mask: torch.Tensor, max_new_tokens: int,
                 min_new_tokens: int = 0, **inputs) -> torch.Tensor:
        """New token ids (batch, n <= max_new_tokens) for a left-padded batch, padded after each
        sequence's end token; `inputs` are the model's prefill inputs (input_ids and
        pixel_values, or inputs_embeds)."""
        batch, length = attention_mask.shape
        kept = self._shape[0] if self._shape is not None else batch
        if batch < kept <= 2 * batch:  # a set's last, smaller batch: pad it to the captured one
            fill = lambda t: torch.cat([t, t[:1].expand(kept - batch, *t.shape[1:])])  # noqa: E731
            tokens = self.generate(fill(attention_mask), max_new_tokens, min_new_tokens,
                                   **{k: fill(v) for k, v in inputs.items()})
            return tokens[:batch]
        device = attention_mask.device
        dtype = next(self.language_model.parameters()).dtype
        self._buffers(batch, length + max_new_tokens, dtype, device)
        self.cache.reset()
        # As generate: positions count the real tokens; padding sits at position 0.
        position_ids = (attention_mask.long().cumsum(-1) - 1).masked_fill(attention_mask == 0, 0)
        self.valid.zero_()
        self.valid[:, :length] = attention_mask.bool()
        self.unfinished.fill_(True)
        self.block_eos.fill_(min_new_tokens > 0)
        self._set_window(length)  # the prefill attends over the prompt's slots alone
        try:
            logits = self.model(attention_mask=attention_mask, position_ids=position_ids,
                                cache=self.cache, use_cache=True, logits_to_keep=1,
                                **inputs).logits[:, -1]
        finally:
            self._set_window(None)
        tokens = [self._choose(logits)]
        self.token.copy_(tokens[0][:, None])
        self.position.copy_(position_ids[:, -1:] + 1)
        self.slot.fill_(length)
        for step in range(1, max_new_tokens):
            if not self.unfinished.any():  # every sequence has ended
                break
            if step == min_new_tokens:
                self.block_eos.fill_(False)
            # This step writes slot length + step - 1 and reads every slot up to it.
            self._set_window(min(bucketed(length + step), self._shape[-1]))
            tokens.append(self._run_step().clone())
        self._set_window(None)
        return torch.stack(tokens, 1)


def _text_dims(config, dtype: torch.dtype | None = None) -> tuple[object, int, int, int]:
    """(text config, key/value heads, head size, bytes per element) of a model's decoder, at
    `dtype`, else the config's (which a model built in a dtype, not loaded in it, may lack:
    pass the weights' dtype where the model is at hand)."""
    text = config.get_text_config(decoder=True)
    heads = getattr(text, "num_key_value_heads", None) or text.num_attention_heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    dtype = (dtype or getattr(text, "dtype", None) or getattr(config, "dtype", None)
             or torch.float32)
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    return text, heads, head_dim, torch.empty((), dtype=dtype).element_size()


def kv_bytes_per_token(config, dtype: torch.dtype | None = None) -> int:
    """Bytes of keys and values one token occupies in the cache of a model with `config`
    (its text config for a vision-language model), at `dtype` (default: the config's)."""
    text, heads, head_dim, element = _text_dims(config, dtype)
    return 2 * text.num_hidden_layers * heads * head_dim * element


def batch_size_for_memory(config, prompt_tokens: int, max_new_tokens: int, free_bytes: int,
                          share: float = 0.7, multiple: int = 8, most: int = 512,
                          dtype: torch.dtype | None = None) -> int:
    """The largest evaluation batch whose cache and prefill activations fit in `share` of
    `free_bytes`: per sample, the cache (prompt + answer, rounded as `GreedyDecoder` rounds) and
    the prefill's largest transients (the MLP's input, gate, up and product at every prompt
    position, and one layer's attention scores in fp32). Rounded down to a multiple of
    `multiple` (at least 1), at most `most`. `dtype`: the weights' (default: the config's)."""
    text, _, _, element = _text_dims(config, dtype)
    cache_len = bucketed(prompt_tokens + max_new_tokens)
    inter = getattr(text, "intermediate_size", None) or 4 * text.hidden_size
    per_sample = (cache_len * kv_bytes_per_token(config, dtype)
                  + prompt_tokens * element * (4 * text.hidden_size + 3 * inter)
                  + text.num_attention_heads * prompt_tokens * cache_len * 4)
    batch = int(share * free_bytes // per_sample)
    if batch >= multiple:
        batch -= batch % multiple
    return max(1, min(batch, most))
