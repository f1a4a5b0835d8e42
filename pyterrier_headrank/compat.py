"""Every use of a transformers or peft detail that is not a stable public API, in one place.

When a release of transformers or peft changes one of these, this is the only module to change. Each function says
what it relies on and on which versions it was checked (the range declared in ``setup.cfg``: transformers 5.20 to
5.24, peft 0.17 to 0.21; CI tests the newest releases that a fresh install resolves and, through
``.ci/constraints-lowest.txt``, the lowest ones).
"""
from __future__ import annotations

import functools
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


# ---- configs ------------------------------------------------------------------------------------------------------
def text_config(config):
    """The decoder's config: ``config.get_text_config()`` on composite models (Gemma 3), else ``config`` itself."""
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def pad_token_id(tokenizer) -> int:
    """The tokenizer's padding id, else its end-of-sequence id, else 0 (padding is always masked out)."""
    if tokenizer.pad_token_id is not None:
        return tokenizer.pad_token_id
    return tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0


# ---- layer inputs -------------------------------------------------------------------------------------------------
#: The names under which decoders and decoder layers take the KV cache: ``cache`` from transformers 5.24 (where
#: ``past_key_values`` still works with a FutureWarning until 5.40), ``past_key_values`` before.
CACHE_NAMES = ("cache", "past_key_values")


def layer_inputs(kwargs: dict) -> dict:
    """The keyword arguments that a decoder passed to a layer, without the hidden states and the cache.

    A forward pre-hook registered ``with_kwargs=True`` on a decoder layer sees the masks, position ids and rotary
    embeddings that the decoder computed for it. Replaying the layer later needs those, and never a cache (HeadRank's
    passes keep none): the cache, under either of its names, is left out. Checked on 5.0-5.24.
    """
    return {k: v for k, v in kwargs.items() if k not in CACHE_NAMES and k != "hidden_states"}


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
