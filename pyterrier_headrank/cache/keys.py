"""The key of a cached candidate list: everything that can change a listwise reranker's scores of it (the scorer,
its model, heads and adapter, the query and the candidates in order), hashed."""
from __future__ import annotations

import hashlib
import inspect
import itertools
import json
import math
from typing import Dict, List, Optional, Sequence

import numpy as np
import pyterrier as pt
import torch

from ..heads import HeadSet
from ..listwise import ListwiseReranker
from ..ranking_settings import RUN, RankingSettings
from ..version import __version__

#: Bumped when the key or the stored format changes; older entries then simply miss (or the file is refused).
CACHE_FORMAT = 1
#: Settings that never change scores (role ``run``), left out of the key of a transformer outside the contract.
NOT_IN_KEY = frozenset(RankingSettings.names(RUN))
#: Values sampled from each weight tensor of a loaded model for its fingerprint.
SAMPLES_PER_TENSOR = 32
#: Tokens sampled from a tokenizer's vocabulary for its fingerprint.
TOKENIZER_SAMPLES = 256
BUSY_TIMEOUT_S = 60.0
#: A column added to the frame handed to the wrapped reranker, to map its output rows back to input rows.
ROW_COLUMN = "__headrank_cache_row__"
QUERY_CHUNK = 500  # keys per SELECT (well under sqlite's limit on bound parameters)



class HeadRankCacheError(RuntimeError):
    """The cache file cannot be used (not a HeadRankCache database, corrupt, locked for too long)."""


# ---- the key ------------------------------------------------------------------------------------------------------
def text_digest(text) -> str:
    """A hash of one passage text; a missing text (None, NaN) hashes differently from every string."""
    if text is None or (isinstance(text, float) and math.isnan(text)):
        return "missing"
    data = ("s:" if isinstance(text, str) else f"{type(text).__name__}:") + str(text)
    return hashlib.blake2b(data.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def candidate_list_key(scorer: str, query: str, docnos: Sequence[str], texts: Sequence,
                       first_stage: Optional[Sequence[float]] = None) -> str:
    """The cache key of one candidate list: SHA-256 of the scorer fingerprint (:func:`scorer_fingerprint`), the
    query text as given, and the ``(docno, hash of passage text)`` pairs in first-stage order; and the first stage's
    scores when the scorer fuses with them (``fuse``).

    Listwise scores depend on every part of this: the scorer, the query, which passages are in the list, their
    texts, and their order (windows, anchors and position bias all follow the first-stage order).
    """
    payload = [CACHE_FORMAT, scorer, str(query), [[str(d), text_digest(t)] for d, t in zip(docnos, texts)]]
    if first_stage is not None:
        payload.append([float(x).hex() for x in first_stage])
    return hashlib.sha256(json.dumps(payload, separators=(",", ":")).encode("ascii")).hexdigest()


def _sha256_json(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode("ascii")).hexdigest()


def weights_fingerprint(model: torch.nn.Module) -> str:
    """A cheap, deterministic fingerprint of a loaded model's weights (not their device).

    Hashes every parameter's and buffer's name, dtype and shape, and :data:`SAMPLES_PER_TENSOR` evenly spaced values
    of each (one small copy to the CPU per tensor). Two different checkpoints, or a model fine-tuned in place, differ
    in nearly every value and so get different fingerprints; an edit that touches only unsampled values does not.
    """
    digest = hashlib.sha256()
    samples = []
    with torch.no_grad():
        for name, tensor in itertools.chain(model.named_parameters(), model.named_buffers()):
            flat = tensor.detach().reshape(-1)
            digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}\n".encode())
            count = min(SAMPLES_PER_TENSOR, flat.numel())
            if count:
                index = torch.arange(count, device=flat.device) * (flat.numel() - 1) // max(count - 1, 1)
                samples.append(flat[index].to(device="cpu", dtype=torch.float64))
    if samples:
        digest.update(torch.cat(samples).numpy().tobytes())
    return digest.hexdigest()


def tensors_digest(tensors: Dict[str, torch.Tensor]) -> str:
    """SHA-256 of every byte of ``tensors`` (with names, dtypes and shapes): for small fitted weights (LoRA)."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensors[name].shape)}\n".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def describe_tokenizer(tokenizer) -> dict:
    """A loaded tokenizer's identity: class, size, special tokens, chat template and a sample of its vocabulary."""
    size = len(tokenizer)
    ids = sorted(set(range(0, size, max(1, size // TOKENIZER_SAMPLES))) | ({size - 1} if size else set()))
    return {"class": _class_name(tokenizer), "size": size,
            "special": _describe(getattr(tokenizer, "special_tokens_map", {}), "tokenizer.special_tokens_map"),
            "chat_template": _sha256_json(str(getattr(tokenizer, "chat_template", None))),
            "padding_side": str(getattr(tokenizer, "padding_side", None)),
            "vocabulary": _sha256_json([str(t) for t in tokenizer.convert_ids_to_tokens(ids)])}


def describe_model(model: torch.nn.Module) -> dict:
    """A loaded model's identity: class, config as JSON (without private and version fields), weight fingerprint."""
    config = model.config.to_dict() if hasattr(getattr(model, "config", None), "to_dict") else {}
    config = {k: v for k, v in config.items() if not k.startswith("_") and k != "transformers_version"}
    return {"class": _class_name(model), "config": _sha256_json(json.loads(json.dumps(config, default=str))),
            "weights": weights_fingerprint(model)}


def describe_adapter(adapter) -> Optional[dict]:
    """A fitted adapter (``reranker.adapter_``): its class, its ``config`` and a hash of its ``weights``."""
    if adapter is None:
        return None
    config = getattr(adapter, "config", None)
    weights = getattr(adapter, "weights", None)
    return {"class": _class_name(adapter),
            "config": config.to_dict() if hasattr(config, "to_dict") else _describe(config, "adapter_.config"),
            "weights": tensors_digest(weights) if weights else None}


def _class_name(value) -> str:
    return f"{type(value).__module__}.{type(value).__qualname__}"


def _describe(value, where: str):
    """``value`` as JSON data for the key; refuses (TypeError) what it cannot describe faithfully."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (np.generic,)):
        return value.item()
    if isinstance(value, torch.dtype):
        return str(value)
    if isinstance(value, HeadSet):
        return value.to_dict()
    if isinstance(value, torch.nn.Module):
        return describe_model(value)
    if hasattr(value, "convert_ids_to_tokens") and hasattr(value, "__len__"):
        return describe_tokenizer(value)
    if isinstance(value, pt.Transformer):
        return describe_scorer(value)
    if isinstance(value, (list, tuple)):
        return [_describe(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {str(k): _describe(v, f"{where}[{k!r}]") for k, v in value.items()}
    raise TypeError(f"HeadRankCache: cannot put {where} (a {type(value).__name__}) into the cache key; use a reranker "
                    f"whose settings are numbers, strings, dtypes, head sets, models or tokenizers")


def constructor_settings(reranker) -> List[str]:
    """The constructor parameters of every class in ``type(reranker).__mro__``, but :data:`NOT_IN_KEY`: the settings
    of a transformer outside the :class:`~pyterrier_headrank.listwise.ListwiseReranker` contract (a wrapper of a
    reranker, say), which must keep each under its parameter's name.

    A constructor that takes ``*args`` (such as a PyTerrier pipeline's) is refused: what those arguments do to
    scores cannot be read.
    """
    names: List[str] = []
    for cls in type(reranker).__mro__:
        init = cls.__dict__.get("__init__")
        if cls is object or not inspect.isfunction(init):
            continue
        for name, param in inspect.signature(init).parameters.items():
            if param.kind is param.VAR_POSITIONAL:
                raise TypeError(f"HeadRankCache: cannot key {type(reranker).__name__}: its constructor takes *{name}, "
                                f"whose effect on scores cannot be read; wrap the reranker itself (HeadRank, ICR, "
                                f"RankGPT), not a pipeline")
            if param.kind is not param.VAR_KEYWORD and name != "self" and name not in names:
                names.append(name)
    return [name for name in names if name not in NOT_IN_KEY]


def scorer_settings(reranker) -> dict:
    """What decides ``reranker``'s scores, by name: a :class:`~pyterrier_headrank.listwise.ListwiseReranker` says so
    itself (:meth:`~pyterrier_headrank.listwise.ListwiseReranker.scoring_settings`); another transformer is read
    through :func:`constructor_settings` (a setting not stored under its name is refused)."""
    if isinstance(reranker, ListwiseReranker):
        return reranker.scoring_settings()
    cls = type(reranker).__name__
    missing = [name for name in constructor_settings(reranker) if not hasattr(reranker, name)]
    if missing:
        raise TypeError(f"HeadRankCache: cannot key {cls}: its setting {missing[0]!r} is not stored as "
                        f"{cls}.{missing[0]}, so the cache cannot tell when it changes")
    return {name: getattr(reranker, name) for name in constructor_settings(reranker)}


def describe_scorer(reranker) -> dict:
    """What a reranker's scores depend on: its class, its settings (:func:`scorer_settings`), its fitted adapter
    (``adapter_``) and this package's version."""
    reranker = scoring_target(reranker)
    cls = type(reranker).__name__
    settings = {name: _describe(value, f"{cls}.{name}") for name, value in scorer_settings(reranker).items()}
    return {"format": CACHE_FORMAT, "package": __version__, "class": _class_name(reranker), "settings": settings,
            "adapter": describe_adapter(getattr(reranker, "adapter_", None))}


def scorer_fingerprint(reranker) -> str:
    """SHA-256 of :func:`describe_scorer`: the part of every list key that identifies the scorer."""
    return _sha256_json(describe_scorer(reranker))


def scoring_target(reranker):
    """The reranker whose settings decide the scores: a PyTerrier artifact that holds a reranker (such as
    :class:`~pyterrier_headrank.artifact.HeadRankArtifact`) is keyed by the reranker inside."""
    if isinstance(reranker, pt.Artifact) and callable(getattr(reranker, "reranker", None)):
        return reranker.reranker()
    return reranker
