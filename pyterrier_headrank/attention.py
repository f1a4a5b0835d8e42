"""Reading query-to-passage attention of chosen heads during one truncated forward pass.

How it works, and why this way:

* transformers dispatches every attention layer through its ``AttentionInterface``. We register one more
  implementation, ``"headrank"``, that calls the stock SDPA kernel for the layer's output and, at the selected
  layers only, also computes the softmax rows of the *suffix* tokens (the query part) for the selected heads. Those
  rows see the real post-RoPE queries and keys, grouped key/value heads and the model's own mask (causal, padding,
  sliding window). No model file is forked; any standard decoder (Llama, Qwen2/3, Gemma 3...) works.
* A pass is two calls: a prefill of the shared prefix (passages) into a KV cache, then the short suffix (query, and
  the "N/A" calibration query as a second batch row) on top of that cache. Only suffix rows are read, so no
  ``L x L`` matrix is ever built: memory is ``heads x suffix x L`` per layer.
* A forward hook on the deepest selected layer raises :class:`_StopForward`: later layers and the LM head never run.
"""
from __future__ import annotations

import contextvars
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import torch
from transformers import AttentionInterface, DynamicCache
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from .heads import HeadSet
from .prompt import Window

ATTENTION_NAME = "headrank"
_ACTIVE: contextvars.ContextVar = contextvars.ContextVar("headrank_capture", default=None)


class _StopForward(Exception):
    """Raised after the deepest layer that HeadRank needs, to end the forward pass early."""


class _Capture:
    """What to read at which layer during a pass, and what was read.

    Only the last ``query_weights.shape[1]`` rows of the pass (the suffix) are read.
    """

    def __init__(self, heads_by_layer: Dict[int, torch.Tensor], query_weights: torch.Tensor,
                 passage_index: torch.Tensor, num_buckets: int, keep_tokens: bool):
        self.heads_by_layer = heads_by_layer
        self.query_weights = query_weights      # [B, S]: 1/|query| on query tokens of the suffix, else 0
        self.passage_index = passage_index      # [B, K]: passage number of each key position, num_buckets-1 if none
        self.num_buckets = num_buckets
        self.keep_tokens = keep_tokens
        self.passage_mass: Dict[int, torch.Tensor] = {}  # layer -> [B, h, buckets]
        self.token_mass: Dict[int, torch.Tensor] = {}    # layer -> [B, h, K]

    def observe(self, module, query: torch.Tensor, key: torch.Tensor, mask: Optional[torch.Tensor],
                scaling: Optional[float]) -> None:
        heads = self.heads_by_layer.get(getattr(module, "layer_idx", None))
        if heads is None:
            return
        layer = module.layer_idx
        groups = query.shape[1] // key.shape[1]
        q = query[:, heads, -self.query_weights.shape[1]:].float()  # [B, h, S, d]
        k = key[:, torch.div(heads, groups, rounding_mode="floor")].float()  # [B, h, K, d]
        scale = scaling if scaling is not None else q.shape[-1] ** -0.5
        logits = torch.matmul(q, k.transpose(-1, -2)) * scale       # [B, h, S, K]
        num_keys, num_rows = k.shape[2], q.shape[2]
        if mask is not None:
            mask = mask[..., -num_rows:, -num_keys:]
            if mask.dtype == torch.bool:
                logits = logits.masked_fill(~mask, float("-inf"))
            else:
                logits = logits + mask.float()
        else:  # SDPA skipped the mask because it is purely causal
            rows = torch.arange(num_rows, device=q.device) + (num_keys - num_rows)
            causal = torch.arange(num_keys, device=q.device)[None, :] <= rows[:, None]
            logits = logits.masked_fill(~causal, float("-inf"))
        probs = torch.softmax(logits, dim=-1)
        tokens = torch.einsum("bhsk,bs->bhk", probs, self.query_weights)  # mean over query tokens: [B, h, K]
        index = self.passage_index[:, -num_keys:]  # a sliding-window layer sees only the last keys
        buckets = tokens.new_zeros(tokens.shape[0], tokens.shape[1], self.num_buckets)
        buckets.scatter_add_(2, index[:, None, :].expand_as(tokens), tokens)
        self.passage_mass[layer] = buckets
        if self.keep_tokens:
            full = tokens.new_zeros(tokens.shape[0], tokens.shape[1], self.passage_index.shape[1])
            full[..., -num_keys:] = tokens
            self.token_mass[layer] = full


def _attention_with_capture(module, query, key, value, attention_mask, *args, **kwargs):
    capture = _ACTIVE.get()
    if capture is not None:
        capture.observe(module, query, key, attention_mask, kwargs.get("scaling"))
    return sdpa_attention_forward(module, query, key, value, attention_mask, *args, **kwargs)


AttentionInterface.register(ATTENTION_NAME, _attention_with_capture)
AttentionMaskInterface.register(ATTENTION_NAME, sdpa_mask)


@dataclass
class Readout:
    """Attention mass that the query part pays, per window, head and passage (and per key token if kept).

    ``passage_mass[b, i, j]``: head ``i`` of the head set (in its order), passage ``j`` of window ``b``; mean over
    the query tokens of the attention summed over the passage's tokens. ``calibration_*`` are the same for the
    content-free query (``None`` when calibration is off). ``token_mass`` is over the batch's key
    positions (the left-padded prefix, then the suffix).
    """

    passage_mass: torch.Tensor
    calibration_passage_mass: Optional[torch.Tensor]
    token_mass: Optional[torch.Tensor] = None
    calibration_token_mass: Optional[torch.Tensor] = None

    def scores(self, weights: torch.Tensor, calibrate: bool = True) -> torch.Tensor:
        """Weighted sum over heads, minus the calibration query's when ``calibrate``: ``[B, passages]``."""
        mass = self.passage_mass
        if calibrate and self.calibration_passage_mass is not None:
            mass = mass - self.calibration_passage_mass
        return torch.einsum("bhn,h->bn", mass, weights.to(mass))


def decoder_layers(model) -> torch.nn.ModuleList:
    """The list of decoder layers of a causal LM (``model.model.layers`` for Llama, Qwen, Gemma...)."""
    base = getattr(model, "base_model", model)
    layers = getattr(base, "layers", None)
    if layers is None and hasattr(base, "language_model"):
        layers = getattr(base.language_model, "layers", None)
    if layers is None:
        raise TypeError(f"HeadRank: cannot find the decoder layers of {type(model).__name__}")
    return layers


def model_shape(model) -> tuple:
    """(number of layers, number of attention heads) of a decoder."""
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    return config.num_hidden_layers, config.num_attention_heads


class _UseAttention:
    """Switch a model to HeadRank's attention implementation for the duration of a pass."""

    def __init__(self, configs):
        self.configs = configs

    def __enter__(self):
        self.previous = [c._attn_implementation for c in self.configs]
        for config in self.configs:
            config._attn_implementation = ATTENTION_NAME

    def __exit__(self, *exc):
        for config, name in zip(self.configs, self.previous):
            config._attn_implementation = name


class _StopAfter:
    """Forward hook that ends the pass after a given decoder layer."""

    def __init__(self, model, layer: Optional[int]):
        self.handle = None
        if layer is not None:
            self.handle = decoder_layers(model)[layer].register_forward_hook(self._stop)

    @staticmethod
    def _stop(*_):
        raise _StopForward()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.handle is not None:
            self.handle.remove()


class AttentionReader:
    """Runs the two-call (prefill, suffix) truncated pass for a batch of windows and returns a :class:`Readout`."""

    def __init__(self, model, pad_token_id: int = 0):
        self.model = model
        self.pad_token_id = pad_token_id
        self.num_layers, self.num_heads = model_shape(model)
        configs = {id(m.config): m.config for m in model.modules()
                   if hasattr(getattr(m, "config", None), "_attn_implementation")}
        self._configs = list(configs.values())

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _run(self, stop_layer: Optional[int], **inputs) -> None:
        with _UseAttention(self._configs), _StopAfter(self.model, stop_layer):
            try:
                decoder = getattr(self.model, "base_model", self.model)
                decoder(**inputs, use_cache=True)
            except _StopForward:
                pass

    def read(self, windows: Sequence[Window], heads: HeadSet, calibrate: bool = True, truncate: bool = True,
             keep_tokens: bool = False) -> Readout:
        """Attention of ``heads`` from each window's query part to its passages.

        ``truncate=False`` runs every layer (for checking that stopping early changes nothing).
        """
        heads.check_fits(self.num_layers, self.num_heads)
        device = self.device
        stop = heads.deepest_layer if truncate else None
        batch = len(windows)
        rows_per_window = 2 if calibrate else 1

        # 1. prefill the prefixes into a cache; nothing is read here. Prefixes are left-padded so that each one ends
        #    where its suffix starts: sliding-window layers then see exactly the tokens they would see unbatched.
        prefix_lengths = [len(w.prefix_ids) for w in windows]
        width = max(prefix_lengths)
        pads = [width - n for n in prefix_lengths]
        prefix_ids = torch.full((batch, width), self.pad_token_id, dtype=torch.long)
        prefix_mask = torch.zeros((batch, width), dtype=torch.long)
        for b, w in enumerate(windows):
            prefix_ids[b, pads[b]:] = torch.tensor(w.prefix_ids)
            prefix_mask[b, pads[b]:] = 1
        positions = (torch.arange(width)[None, :] - torch.tensor(pads)[:, None]).clamp(min=0)
        cache = DynamicCache(config=self.model.config)
        self._run(stop, input_ids=prefix_ids.to(device), attention_mask=prefix_mask.to(device),
                  position_ids=positions.to(device), past_key_values=cache)
        if rows_per_window > 1:
            cache.batch_repeat_interleave(rows_per_window)

        # 2. the suffixes: query (and calibration query) rows on top of the cache, read at the selected layers
        parts = [part for w in windows for part in ((w.query, w.calibration) if calibrate else (w.query,))]
        lengths = [prefix_lengths[i // rows_per_window] for i in range(len(parts))]
        suffix_width = max(len(p.ids) for p in parts)
        rows = len(parts)
        suffix_ids = torch.full((rows, suffix_width), self.pad_token_id, dtype=torch.long)
        suffix_mask = torch.zeros((rows, suffix_width), dtype=torch.long)
        query_weights = torch.zeros((rows, suffix_width))
        num_passages = max(w.num_passages for w in windows)
        passage_index = torch.full((rows, width + suffix_width), num_passages, dtype=torch.long)
        for r, part in enumerate(parts):
            suffix_ids[r, : len(part.ids)] = torch.tensor(part.ids)
            suffix_mask[r, : len(part.ids)] = 1
            start, end = part.span
            query_weights[r, start:end] = 1.0 / max(1, end - start)
            pad = pads[r // rows_per_window]
            for j, (a, b) in enumerate(windows[r // rows_per_window].passage_spans):
                passage_index[r, pad + a:pad + b] = j
        positions = torch.tensor(lengths)[:, None] + torch.arange(suffix_width)[None, :]
        by_layer = heads.by_layer()
        capture = _Capture({layer: torch.tensor(h, device=device) for layer, h in by_layer.items()},
                           query_weights.to(device), passage_index.to(device), num_passages + 1, keep_tokens)
        token = _ACTIVE.set(capture)
        try:
            self._run(stop, input_ids=suffix_ids.to(device),
                      attention_mask=torch.cat([prefix_mask.repeat_interleave(rows_per_window, 0), suffix_mask],
                                               1).to(device),
                      position_ids=positions.to(device), past_key_values=cache)
        finally:
            _ACTIVE.reset(token)

        # 3. heads back into the head set's order
        restore = torch.argsort(torch.tensor(heads.order_by_layer(), device=device))
        passage = torch.cat([capture.passage_mass[l] for l in by_layer], 1)[:, restore, :num_passages]
        tokens = torch.cat([capture.token_mass[l] for l in by_layer], 1)[:, restore] if keep_tokens else None
        if calibrate:
            return Readout(passage[0::2], passage[1::2],
                           tokens[0::2] if keep_tokens else None, tokens[1::2] if keep_tokens else None)
        return Readout(passage, None, tokens, None)
