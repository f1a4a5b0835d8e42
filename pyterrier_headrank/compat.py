"""Every use of a transformers or peft detail that is not a stable public API, in one place.

When a release of transformers or peft changes one of these, this is the only module to change. Each function says
what it relies on and on which versions it was checked (the range declared in ``setup.cfg``: transformers 5.20 to
5.24, peft 0.17 to 0.21; CI tests the newest releases that a fresh install resolves and, through
``.ci/constraints-lowest.txt``, the lowest ones).
"""
from __future__ import annotations

import functools
import inspect
import threading
from contextlib import contextmanager
from typing import Callable, Dict, Iterator, List

import torch


# ---- attention implementations ----------------------------------------------------------------------------------
def register_attention(name: str, function: Callable) -> None:
    """Register ``function`` as attention implementation ``name``, with SDPA's mask builder for it.

    Relies on ``AttentionInterface.register`` (public) and ``transformers.masking_utils.AttentionMaskInterface`` /
    ``sdpa_mask`` (a module-level interface, not in the top-level namespace): a custom implementation needs a mask
    builder registered under the same name, else the model builds no mask for it. Checked on 5.20-5.24.
    """
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(name, function)
    AttentionMaskInterface.register(name, sdpa_mask)


def sdpa_attention(module, query, key, value, attention_mask, *args, **kwargs):
    """The stock SDPA attention of transformers (``integrations.sdpa_attention.sdpa_attention_forward``).

    Relies on that function's signature ``(module, query, key, value, attention_mask, **kwargs) -> (out, None)``,
    with ``query`` ``[B, heads, S, d]`` after RoPE and ``key`` ``[B, kv_heads, K, d]`` before GQA expansion. Checked
    on 5.20-5.24.
    """
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    return sdpa_attention_forward(module, query, key, value, attention_mask, *args, **kwargs)


def attention_configs(model: torch.nn.Module) -> List[object]:
    """The distinct configs inside ``model`` that carry an attention implementation (``config._attn_implementation``).

    Composite models (Gemma 3) have a text config beside the top-level one; both are switched. Relies on the private
    attribute ``_attn_implementation`` being read at every forward call (5.0-5.24: it is a property backed by
    ``_attn_implementation_internal``); ``model.set_attn_implementation`` re-validates and is not reentrant.
    """
    configs = {id(m.config): m.config for m in model.modules()
               if hasattr(getattr(m, "config", None), "_attn_implementation")}
    return list(configs.values())


_SWITCH_LOCK = threading.Lock()
_SWITCHED: Dict[int, list] = {}  # id(config) -> [users, implementation before the first user]


@contextmanager
def attention_implementation(configs: List[object], name: str) -> Iterator[None]:
    """Use attention implementation ``name`` on ``configs`` while inside, safely across threads.

    Several threads may run passes on one shared model: the first one in switches, the last one out restores what was
    there before. A registered implementation that falls back to plain SDPA outside its own passes (as HeadRank's
    does) therefore never changes another caller's results.
    """
    with _SWITCH_LOCK:
        for config in configs:
            entry = _SWITCHED.setdefault(id(config), [0, config._attn_implementation])
            entry[0] += 1
            config._attn_implementation = name
    try:
        yield
    finally:
        with _SWITCH_LOCK:
            for config in configs:
                entry = _SWITCHED[id(config)]
                entry[0] -= 1
                if entry[0] == 0:
                    config._attn_implementation = entry[1]
                    del _SWITCHED[id(config)]


@contextmanager
def eager_attention(model: torch.nn.Module) -> Iterator[None]:
    """Run ``model`` with transformers' eager attention while inside (for ``output_attentions`` references)."""
    with attention_implementation(attention_configs(model), "eager"):
        yield


# ---- configs ------------------------------------------------------------------------------------------------------
def text_config(config):
    """The decoder's config: ``config.get_text_config()`` on composite models (Gemma 3), else ``config`` itself."""
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def pad_token_id(tokenizer) -> int:
    """The tokenizer's padding id, else its end-of-sequence id, else 0 (padding is always masked out)."""
    if tokenizer.pad_token_id is not None:
        return tokenizer.pad_token_id
    return tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0


# ---- the KV cache and the cache keyword ------------------------------------------------------------------------------
def new_cache(model: torch.nn.Module):
    """An empty :class:`PrefixCache` laid out for ``model`` (sliding-window layers get sliding layers)."""
    return _prefix_cache_class()(config=model.config)


@functools.lru_cache(maxsize=None)
def _prefix_cache_class():
    from transformers import DynamicCache

    class PrefixCache(DynamicCache):
        """A ``DynamicCache`` whose content can be frozen after a prefill: a later pass reads the prefix and its own
        tokens, as with a normal cache, but stores nothing, and may run ``repeats`` rows per prefix row.

        HeadRank prefills the passages once, then runs the query and the "N/A" calibration query as two rows on top.
        Repeating the whole cache for the second row (``batch_repeat_interleave``) doubled its memory; here the rows
        are repeated one layer at a time, inside :meth:`update`, and dropped when the layer is done. The layer's own
        ``update`` builds the states it returns (so sliding-window layers keep their exact semantics); its attributes
        are then restored, which relies on cache layers rebinding, not mutating, their tensors in ``update``
        (``DynamicLayer`` and ``DynamicSlidingWindowLayer``, checked on 5.0-5.24; relies on ``DynamicCache(config=)``
        and ``Cache.layers``).
        """

        frozen_repeats = None

        def freeze(self, repeats: int = 1) -> None:
            self.frozen_repeats = int(repeats)

        def update(self, key_states, value_states, layer_idx, *args, **kwargs):
            if self.frozen_repeats is None:
                return super().update(key_states, value_states, layer_idx, *args, **kwargs)
            layer = self.layers[layer_idx]
            saved = dict(vars(layer))
            try:
                if self.frozen_repeats > 1 and layer.get_seq_length() > 0:
                    layer.keys = layer.keys.repeat_interleave(self.frozen_repeats, dim=0)
                    layer.values = layer.values.repeat_interleave(self.frozen_repeats, dim=0)
                return super().update(key_states, value_states, layer_idx, *args, **kwargs)
            finally:
                vars(layer).clear()
                vars(layer).update(saved)

    return PrefixCache


#: The names under which decoders and decoder layers take the KV cache: ``cache`` from transformers 5.24 (where
#: ``past_key_values`` still works with a FutureWarning until 5.40), ``past_key_values`` before.
CACHE_NAMES = ("cache", "past_key_values")


@functools.lru_cache(maxsize=None)
def _cache_keyword_of(forward) -> str:
    parameters = inspect.signature(inspect.unwrap(forward)).parameters
    return "cache" if "cache" in parameters else "past_key_values"


def cache_keyword(module: torch.nn.Module) -> str:
    """The keyword that ``module.forward`` takes its KV cache under (``cache`` on 5.24, ``past_key_values`` before).

    Read from the undecorated signature (``inspect.unwrap`` through ``deprecate_kwarg``), so no deprecated name is
    ever passed and no FutureWarning is raised.
    """
    return _cache_keyword_of(type(module).forward)


def layer_inputs(kwargs: dict) -> dict:
    """The keyword arguments that a decoder passed to a layer, without the hidden states and the cache.

    A forward pre-hook registered ``with_kwargs=True`` on a decoder layer sees the masks, position ids and rotary
    embeddings that the decoder computed for it. Replaying the layer later needs those, but with a new cache: the
    cache, under either of its names, is left out here and passed fresh by the caller. Checked on 5.20-5.24 (5.24
    renamed the keyword; keeping the old cache by mistake gives a batch-size mismatch in the replay).
    """
    return {k: v for k, v in kwargs.items() if k not in CACHE_NAMES and k != "hidden_states"}


def call_layer(layer: torch.nn.Module, hidden: torch.Tensor, cache, inputs: dict):
    """Run one decoder layer on ``hidden`` with the cache under the keyword that the layer takes."""
    return layer(hidden, **{cache_keyword(layer): cache}, **inputs)


def call_decoder(decoder: torch.nn.Module, cache, **inputs):
    """Run a decoder (the base model) with ``use_cache=True`` and ``cache`` under the keyword it takes."""
    return decoder(**inputs, use_cache=True, **{cache_keyword(decoder): cache})


# ---- peft ---------------------------------------------------------------------------------------------------------
#: LoRA parameters injected by peft are named ``...lora_A.<adapter>.weight`` / ``...lora_B.<adapter>.weight``
#: (peft 0.10-0.21); this marker finds them, and what follows ``.layers.`` in the name is the layer index.
LORA_MARKER = "lora_"


def is_lora_parameter(name: str) -> bool:
    return LORA_MARKER in name


def lora_layer_index(name: str) -> int:
    """The decoder layer a LoRA parameter sits in, from its name (``model.layers.<i>.self_attn...``)."""
    return int(name.split(".layers.")[1].split(".")[0])


# ---- quiet loading ------------------------------------------------------------------------------------------------
@contextmanager
def quiet_loading(verbose: bool) -> Iterator[None]:
    """While inside and not ``verbose``: no progress bars and no info/warning logs from transformers' loading.

    transformers' own bars and logs go through ``transformers.utils.logging`` (public switches); the GGUF
    de-quantisation bar does not: ``modeling_gguf_pytorch_utils`` calls ``tqdm.auto.tqdm`` directly (5.0-5.24), so
    that module's ``tqdm`` name is swapped for a disabled one while inside. Callers hold a lock (model loading is
    serialised), since these switches are process-wide.
    """
    if verbose:
        yield
        return
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    gguf_module, gguf_tqdm = None, None
    try:
        from transformers import modeling_gguf_pytorch_utils as gguf_module
        gguf_tqdm = gguf_module.tqdm
        gguf_module.tqdm = functools.partial(gguf_tqdm, disable=True)
    except (ImportError, AttributeError):
        gguf_module = None
    try:
        yield
    finally:
        if gguf_module is not None:
            gguf_module.tqdm = gguf_tqdm
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
