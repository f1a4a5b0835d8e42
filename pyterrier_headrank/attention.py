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
* The pass ends inside the attention of the deepest selected layer (:func:`stop_inside`): once its keys are cached
  and its rows read, :class:`StopForward` is raised, so that layer's output projection and MLP, later layers and the
  LM head never run.
"""
from __future__ import annotations

import contextvars
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Dict, Iterator, Optional, Sequence

import torch

from . import compat
from .heads import HeadSet
from .prompt import Window

ATTENTION_NAME = "headrank"
#: The capture of the pass running in this thread / context; ``None`` outside HeadRank's passes, where the registered
#: implementation is plain SDPA. A context variable, so concurrent passes on one shared model never see each other's.
_ACTIVE: contextvars.ContextVar = contextvars.ContextVar("headrank_capture", default=None)
#: The layer inside whose attention the pass of this context ends (see :func:`stop_inside`); ``None``: never.
_STOP_AT: contextvars.ContextVar = contextvars.ContextVar("headrank_stop_at", default=None)
#: Identifies the pass of this context to its own stop hook (see :func:`stop_after`).
_PASS_TOKEN: contextvars.ContextVar = contextvars.ContextVar("headrank_pass", default=None)


class StopForward(Exception):
    """Raised after the deepest layer that HeadRank needs, to end the forward pass early."""


class Capture:
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

    def readout(self, heads: HeadSet, num_passages: int, calibrate: bool) -> "Readout":
        """What was read, heads back in the head set's order; rows alternate query / calibration when calibrated."""
        missing = [layer for layer in self.heads_by_layer if layer not in self.passage_mass]
        if missing:
            raise RuntimeError(f"HeadRank: the pass never reached the attention of layer(s) {missing}; the model does "
                               f"not dispatch attention through transformers' AttentionInterface")
        restore = torch.argsort(torch.tensor(heads.order_by_layer(), device=self.query_weights.device))
        layers = list(self.heads_by_layer)
        passage = torch.cat([self.passage_mass[l] for l in layers], 1)[:, restore, :num_passages]
        tokens = torch.cat([self.token_mass[l] for l in layers], 1)[:, restore] if self.keep_tokens else None
        if calibrate:
            return Readout(passage[0::2], passage[1::2],
                           tokens[0::2] if self.keep_tokens else None, tokens[1::2] if self.keep_tokens else None)
        return Readout(passage, None, tokens, None)


def _attention_with_capture(module, query, key, value, attention_mask, *args, **kwargs):
    capture = _ACTIVE.get()
    if capture is not None:
        capture.observe(module, query, key, attention_mask, kwargs.get("scaling"))
    stop = _STOP_AT.get()
    if stop is not None and getattr(module, "layer_idx", None) == stop:
        # the deepest layer needed: its keys are cached and its rows read; its attention output, o_proj and MLP are not
        raise StopForward()
    return compat.sdpa_attention(module, query, key, value, attention_mask, *args, **kwargs)


compat.register_attention(ATTENTION_NAME, _attention_with_capture)


@contextmanager
def capturing(capture: "Capture") -> Iterator["Capture"]:
    """Make ``capture`` the one that HeadRank's attention implementation fills in this context."""
    token = _ACTIVE.set(capture)
    try:
        yield capture
    finally:
        _ACTIVE.reset(token)


def active_capture() -> Optional["Capture"]:
    """The capture of the pass running in this context, if any."""
    return _ACTIVE.get()


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
    config = compat.text_config(model.config)
    return config.num_hidden_layers, config.num_attention_heads


@contextmanager
def headrank_attention(model) -> Iterator[None]:
    """Run ``model``'s attention through HeadRank's implementation while inside (thread-safe, see compat)."""
    with compat.attention_implementation(compat.attention_configs(model), ATTENTION_NAME):
        yield


@contextmanager
def stop_inside(layer: Optional[int]) -> Iterator[None]:
    """End the passes of this context with :class:`StopForward` inside the attention of decoder layer ``layer``.

    By then that layer's keys and values are in the cache and its query rows have been read; its attention output,
    output projection and MLP, and every later layer, are never computed. ``None``: run every layer.
    """
    token = _STOP_AT.set(layer)
    try:
        yield
    finally:
        _STOP_AT.reset(token)


@contextmanager
def stop_after(module: Optional[torch.nn.Module]) -> Iterator[None]:
    """End the pass of this context with :class:`StopForward` once ``module`` has run (``None``: never).

    The hook is registered for this pass only and fires only in the context that registered it, so a concurrent pass
    on the same shared model (another thread, another stop layer) runs on undisturbed.
    """
    if module is None:
        yield
        return
    token = object()
    marker = _PASS_TOKEN.set(token)

    def stop(*_):
        if _PASS_TOKEN.get() is token:
            raise StopForward()

    handle = module.register_forward_hook(stop)
    try:
        yield
    finally:
        handle.remove()
        _PASS_TOKEN.reset(marker)


class AttentionReader:
    """Runs the two-call (prefill, suffix) truncated pass for a batch of windows and returns a :class:`Readout`.

    Thread-safe: what one pass reads lives in its own context (:func:`capturing`, :func:`stop_inside`), not on the
    shared model, so several readers (threads, rerankers) may use one loaded model at once.
    """

    def __init__(self, model, pad_token_id: int = 0):
        self.model = model
        self.pad_token_id = pad_token_id
        self.num_layers, self.num_heads = model_shape(model)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def run(self, stop_layer: Optional[int], cache, **inputs) -> None:
        """One decoder pass with HeadRank's attention, into ``cache``, ended inside layer ``stop_layer`` (if given)."""
        with headrank_attention(self.model), stop_inside(stop_layer):
            try:
                compat.call_decoder(getattr(self.model, "base_model", self.model), cache, **inputs)
            except StopForward:
                pass

    def read(self, windows: Sequence[Window], heads: HeadSet, calibrate: bool = True, truncate: bool = True,
             keep_tokens: bool = False) -> Readout:
        """Attention of ``heads`` from each window's query part to its passages.

        ``truncate=False`` runs every layer (for checking that stopping early changes nothing).
        """
        heads.check_fits(self.num_layers, self.num_heads)
        stop = heads.deepest_layer if truncate else None
        rows_per_window = 2 if calibrate else 1
        prefix = _Prefix.left_padded(windows, self.pad_token_id)
        cache = compat.new_cache(self.model)
        self.run(stop, cache, **prefix.inputs(self.device))  # 1. the passages, nothing read
        cache.freeze(rows_per_window)  # the suffix rows read the passages' keys and values but add none
        parts = [part for w in windows for part in ((w.query, w.calibration) if calibrate else (w.query,))]
        suffix = _Suffix.build(windows, parts, prefix, rows_per_window, self.pad_token_id)
        by_layer = heads.by_layer()
        capture = Capture({layer: torch.tensor(h, device=self.device) for layer, h in by_layer.items()},
                          suffix.query_weights.to(self.device), suffix.passage_index.to(self.device),
                          suffix.num_passages + 1, keep_tokens)
        with capturing(capture):  # 2. query (and calibration) rows on top of the cache, read at the chosen layers
            self.run(stop, cache, **suffix.inputs(prefix, rows_per_window, self.device))
        return capture.readout(heads, suffix.num_passages, calibrate)


@dataclass
class _Prefix:
    """The passages part of a batch of windows, left-padded so that each prefix ends where its suffix starts.

    Left padding keeps sliding-window layers exact: every suffix token sees exactly the keys it would see unbatched.
    """

    ids: torch.Tensor
    mask: torch.Tensor
    pads: list
    lengths: list

    @classmethod
    def left_padded(cls, windows: Sequence[Window], pad_token_id: int) -> "_Prefix":
        lengths = [len(w.prefix_ids) for w in windows]
        width = max(lengths)
        pads = [width - n for n in lengths]
        ids = torch.full((len(windows), width), pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(windows), width), dtype=torch.long)
        for b, w in enumerate(windows):
            ids[b, pads[b]:] = torch.tensor(w.prefix_ids)
            mask[b, pads[b]:] = 1
        return cls(ids, mask, pads, lengths)

    @property
    def width(self) -> int:
        return self.ids.shape[1]

    def inputs(self, device) -> dict:
        positions = (torch.arange(self.width)[None, :] - torch.tensor(self.pads)[:, None]).clamp(min=0)
        return dict(input_ids=self.ids.to(device), attention_mask=self.mask.to(device),
                    position_ids=positions.to(device))


@dataclass
class _Suffix:
    """The query rows (and calibration rows) that run on top of the prefix cache, and what to read from them."""

    ids: torch.Tensor
    mask: torch.Tensor
    positions: torch.Tensor
    query_weights: torch.Tensor  # [rows, S]: 1/|query| on the query tokens, else 0
    passage_index: torch.Tensor  # [rows, prefix + S]: passage number of each key position, num_passages if none
    num_passages: int

    @classmethod
    def build(cls, windows: Sequence[Window], parts, prefix: _Prefix, rows_per_window: int,
              pad_token_id: int) -> "_Suffix":
        rows, width = len(parts), max(len(p.ids) for p in parts)
        num_passages = max(w.num_passages for w in windows)
        ids = torch.full((rows, width), pad_token_id, dtype=torch.long)
        mask = torch.zeros((rows, width), dtype=torch.long)
        query_weights = torch.zeros((rows, width))
        passage_index = torch.full((rows, prefix.width + width), num_passages, dtype=torch.long)
        for r, part in enumerate(parts):
            ids[r, : len(part.ids)] = torch.tensor(part.ids)
            mask[r, : len(part.ids)] = 1
            start, end = part.span
            query_weights[r, start:end] = 1.0 / max(1, end - start)
            pad = prefix.pads[r // rows_per_window]
            for j, (a, b) in enumerate(windows[r // rows_per_window].passage_spans):
                passage_index[r, pad + a:pad + b] = j
        lengths = torch.tensor([prefix.lengths[r // rows_per_window] for r in range(rows)])
        positions = lengths[:, None] + torch.arange(width)[None, :]
        return cls(ids, mask, positions, query_weights, passage_index, num_passages)

    def inputs(self, prefix: _Prefix, rows_per_window: int, device) -> dict:
        mask = torch.cat([prefix.mask.repeat_interleave(rows_per_window, 0), self.mask], 1)
        return dict(input_ids=self.ids.to(device), attention_mask=mask.to(device),
                    position_ids=self.positions.to(device))
