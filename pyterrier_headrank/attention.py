"""Reading query-to-passage attention of chosen heads during one truncated forward pass.

How it works, and why this way:

* transformers dispatches every attention layer through its ``AttentionInterface``. We register one more
  implementation, ``"headrank"``, that calls the stock SDPA kernel for the layer's output, and computes the softmax
  rows of the *suffix* tokens (query and calibration parts) once more under the layout's mask
  (:func:`suffix_attention`): those rows serve the reading of the selected heads and replace the suffix rows of the
  output. They see the real post-RoPE queries and keys, grouped key/value heads (not repeated) and the model's own
  masking rules (causal, padding, sliding window). No model file is forked; any standard decoder (Llama, Qwen2/3,
  Gemma 3...) works.
* A pass is one call, with no KV cache: the passages, then the query part and the "N/A" calibration part side by
  side at the same positions, kept from seeing each other by a mask (:mod:`.layout`). Only those suffix rows are
  read, so no ``L x L`` matrix is ever built: memory is ``heads x suffix x L`` per layer.
* The pass ends inside the attention of the deepest selected layer (:func:`stop_inside`): once its rows are read,
  :class:`StopForward` is raised, so that layer's attention output, output projection and MLP, later layers and the
  LM head never run.
"""
from __future__ import annotations

import contextvars
import threading
import weakref
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Dict, Iterator, Optional, Sequence

import torch

from . import compat
from .heads import HeadSet
from .layout import Layout
from .prompt import Window

ATTENTION_NAME = "headrank"
#: The capture of the pass running in this thread / context; ``None`` outside HeadRank's passes, where the registered
#: implementation is plain SDPA. A context variable, so concurrent passes on one shared model never see each other's.
_ACTIVE: contextvars.ContextVar = contextvars.ContextVar("headrank_capture", default=None)
#: The layer inside whose attention the pass of this context ends (see :func:`stop_inside`); ``None``: never.
_STOP_AT: contextvars.ContextVar = contextvars.ContextVar("headrank_stop_at", default=None)


class StopForward(Exception):
    """Raised after the deepest layer that HeadRank needs, to end the forward pass early."""


class Capture:
    """What to read at which layer during a pass over a :class:`Layout`, and what was read."""

    def __init__(self, heads_by_layer: Dict[int, torch.Tensor], layout: Layout, keep_tokens: bool):
        self.heads_by_layer = heads_by_layer
        self.layout = layout
        self.keep_tokens = keep_tokens
        self.passage_mass: Dict[int, torch.Tensor] = {}  # layer -> [B*R, h, passages + 1]
        self.token_mass: Dict[int, torch.Tensor] = {}    # layer -> [B*R, h, T]

    def observe(self, layer: int, probs: torch.Tensor) -> None:
        """Read the selected heads of ``layer`` (if it has any) from the suffix rows' attention ``[B, H, S, T]``."""
        heads = self.heads_by_layer.get(layer)
        if heads is None:
            return
        layout = self.layout
        # mean over the tokens of each text (query, calibration): [B, R, h, T], then rows b0r0, b0r1, b1r0...
        tokens = torch.einsum("bhst,brs->brht", probs[:, heads], layout.query_weights).flatten(0, 1)
        index = layout.passage_index.repeat_interleave(layout.rows_per_window, 0)
        buckets = tokens.new_zeros(tokens.shape[0], tokens.shape[1], layout.num_passages + 1)
        buckets.scatter_add_(2, index[:, None, :].expand_as(tokens), tokens)
        self.passage_mass[layer] = buckets
        if self.keep_tokens:
            self.token_mass[layer] = tokens

    def readout(self, heads: HeadSet, num_passages: int, calibrate: bool) -> "Readout":
        """What was read, heads back in the head set's order; rows alternate query / calibration when calibrated."""
        missing = [layer for layer in self.heads_by_layer if layer not in self.passage_mass]
        if missing:
            raise RuntimeError(f"HeadRank: the pass never reached the attention of layer(s) {missing}; the model does "
                               f"not dispatch attention through transformers' AttentionInterface")
        restore = torch.argsort(torch.tensor(heads.order_by_layer(), device=self.layout.ids.device))
        layers = list(self.heads_by_layer)
        passage = torch.cat([self.passage_mass[l] for l in layers], 1)[:, restore, :num_passages]
        tokens = torch.cat([self.token_mass[l] for l in layers], 1)[:, restore] if self.keep_tokens else None
        if calibrate:
            return Readout(passage[0::2], passage[1::2],
                           tokens[0::2] if self.keep_tokens else None, tokens[1::2] if self.keep_tokens else None)
        return Readout(passage, None, tokens, None)


@torch.compiler.disable  # reads and writes this pass's capture: never traced into a compiled layer's graph
def _attention_with_capture(module, query, key, value, attention_mask, *args, **kwargs):
    capture = _ACTIVE.get()
    if capture is None:  # not one of HeadRank's passes: plain SDPA
        return compat.sdpa_attention(module, query, key, value, attention_mask, *args, **kwargs)
    layout = capture.layout
    probs = suffix_attention(query[:, :, layout.prefix_width:], key, layout.suffix_mask(kwargs.get("sliding_window")),
                             kwargs.get("scaling"))
    capture.observe(getattr(module, "layer_idx", None), probs)
    stop = _STOP_AT.get()
    if stop is not None and getattr(module, "layer_idx", None) == stop:
        # the deepest layer needed: its rows are read; its attention output, o_proj and MLP are not computed
        raise StopForward()
    # the model's own SDPA over every row (its mask, or none: SDPA's causal fast path), then the suffix rows, which
    # must not see the other part (query or calibration), from their own attention above
    output, _ = compat.sdpa_attention(module, query, key, value, attention_mask, *args, **kwargs)  # [B, T, H, d]
    suffix = suffix_output(probs, value)
    if torch.is_grad_enabled():  # training replays: out of place, for autograd
        return torch.cat([output[:, : layout.prefix_width], suffix], dim=1), None
    output[:, layout.prefix_width:] = suffix
    return output, None


def suffix_attention(query: torch.Tensor, key: torch.Tensor, mask: torch.Tensor,
                     scaling: Optional[float]) -> torch.Tensor:
    """Softmax attention ``[B, H, S, T]`` (float32) of the suffix rows ``query`` ``[B, H, S, d]`` over every key
    ``[B, KV, T, d]``, under ``mask`` ``[B, 1, S, T]`` (True: visible).

    Grouped key/value heads are used as they are (each KV head serves its ``H / KV`` query heads), never repeated:
    memory is the ``S x T`` rows only.
    """
    batch, heads, rows, dim = query.shape
    kv_heads = key.shape[1]
    groups = heads // kv_heads
    scale = scaling if scaling is not None else dim ** -0.5
    grouped = query.float().reshape(batch, kv_heads, groups * rows, dim)
    logits = torch.matmul(grouped, key.float().transpose(-1, -2)).view(batch, kv_heads, groups, rows, -1) * scale
    logits = logits.masked_fill(~mask[:, :, None], float("-inf"))
    return torch.softmax(logits, dim=-1).view(batch, heads, rows, -1)


def suffix_output(probs: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """The attention output ``[B, S, H, d]`` of the suffix rows from their attention ``probs`` ``[B, H, S, T]``."""
    batch, heads, rows, keys = probs.shape
    kv_heads = value.shape[1]
    grouped = probs.to(value.dtype).reshape(batch, kv_heads, heads // kv_heads * rows, keys)
    return torch.matmul(grouped, value).view(batch, heads, rows, -1).transpose(1, 2)


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


def compile_layers(model, deepest: int) -> None:
    """Compile decoder layers ``0..deepest`` of ``model`` in place (``nn.Module.compile``, dynamic shapes).

    Regional compilation: the layers share one compiled code (they are the same module class), the attention
    implementation runs uncompiled between the graphs, and a layer already compiled is left as it is.
    """
    with _COMPILE_LOCK:
        for layer in decoder_layers(model)[: deepest + 1]:
            if layer not in _COMPILED:
                layer.compile(dynamic=True)
                _COMPILED.add(layer)


_COMPILED: "weakref.WeakSet[torch.nn.Module]" = weakref.WeakSet()  # layers that compile_layers compiled
_COMPILE_LOCK = threading.Lock()


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

    def run(self, stop_layer: Optional[int], **inputs) -> None:
        """One decoder pass with HeadRank's attention, without a KV cache, ended inside layer ``stop_layer``."""
        with headrank_attention(self.model), stop_inside(stop_layer):
            try:
                getattr(self.model, "base_model", self.model)(**inputs, use_cache=False)
            except StopForward:
                pass

    def read(self, windows: Sequence[Window], heads: HeadSet, calibrate: bool = True, truncate: bool = True,
             keep_tokens: bool = False) -> Readout:
        """Attention of ``heads`` from each window's query part to its passages, in one pass (see :mod:`.layout`).

        ``truncate=False`` runs every layer (for checking that stopping early changes nothing).
        """
        heads.check_fits(self.num_layers, self.num_heads)
        layout = Layout.build(windows, calibrate, self.pad_token_id)
        inputs = layout.inputs(self.device)
        capture = Capture({layer: torch.tensor(h, device=self.device) for layer, h in heads.by_layer().items()},
                          layout.to(self.device), keep_tokens)
        with capturing(capture):
            self.run(heads.deepest_layer if truncate else None, **inputs)
        return capture.readout(heads, layout.num_passages, calibrate)
