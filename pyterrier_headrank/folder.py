"""A fitted HeadRank reranker as a folder: one folder, no pickle.

A folder holds:

* ``headrank.json``: format version, the model name and shape, the settings that decide the scores, the head set, the adapter
  configuration and the SHA-256 of the adapter weights;
* ``adapter.safetensors``: the LoRA weights (only when the reranker was aligned);
* ``training.json``: what fit did (data sizes, settings, selected heads, per-head profile, training curve, timings);
* ``pt_meta.json``: PyTerrier's artifact metadata (type ``reranker``, format ``headrank``), so that
  ``pt.Artifact.load(path)`` finds :class:`~pyterrier_headrank.artifact.HeadRankArtifact` through the
  ``pyterrier.artifact`` entry point.

This module reads and writes folders and knows nothing of :class:`HeadRank` (which builds itself from
:class:`~pyterrier_headrank.fit_parts.FitParts`, see ``HeadRank.from_parts``). :mod:`~pyterrier_headrank.hub` moves
the same folder through the Hugging Face hub; :mod:`~pyterrier_headrank.registry` finds shipped fits by name.
"""
from __future__ import annotations

import functools
import json
import os
import pathlib
from typing import Optional

import numpy as np

from . import compat
from .attention import model_shape
from .fit_parts import FitParts
from .heads import HeadSet
from .lora import Adapter, AdapterConfig
from .models import sha256_of
from .ranking_settings import SCORES, RankingSettings
from .selection import HeadProfile

FORMAT_VERSION = 1
ARTIFACT_TYPE = "reranker"
ARTIFACT_FORMAT = "headrank"
SETTINGS_FILE = "headrank.json"
ADAPTER_FILE = "adapter.safetensors"
SUMMARY_FILE = "training.json"
META_FILE = "pt_meta.json"
#: The settings of HeadRank that a folder records (the model and heads are stored on their own): those that decide
#: the scores (:class:`~pyterrier_headrank.ranking_settings.RankingSettings`, role ``scores``). Machine settings
#: (``batch_size``, ``device``, ``dtype``, ``compile``) are chosen where the folder is used, not where it was made;
#: a ``batch_size`` in older folders is ignored.
SETTINGS = RankingSettings.names(SCORES)


def fingerprint(model) -> dict:
    """What a folder's heads and adapters depend on: the model's shape."""
    config = compat.text_config(model.config)
    layers, heads = model_shape(model)
    return {"layers": int(layers), "heads": int(heads), "hidden_size": int(config.hidden_size),
            "kv_heads": int(getattr(config, "num_key_value_heads", heads) or heads),
            "model_type": str(getattr(config, "model_type", type(model).__name__))}


class SavedAdapter(Adapter):
    """The adapter of a saved fit (possibly without LoRA weights): an :class:`Adapter` that first checks the model is
    the one it was fitted on (``expected``: its :func:`fingerprint`; ``source``: the folder, for errors)."""

    def __init__(self, config: Optional[AdapterConfig], weights: Optional[dict], expected: dict, source: str):
        super().__init__(config, weights)
        self.expected = expected
        self.source = source

    def apply(self, base):
        found = fingerprint(base)
        if found != self.expected:
            raise ValueError(f"HeadRank: {self.source} was fitted on a model of shape {self.expected}, but the model "
                             f"given has shape {found}; load it with the model it was fitted on")
        if self.config is None:
            return base
        return super().apply(base)


def _json_default(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _write_json(path: pathlib.Path, data: dict) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=_json_default, allow_nan=False) + "\n")
    os.replace(tmp, path)


def save(reranker, path) -> str:
    """Write ``reranker`` to the folder ``path`` (created if needed; HeadRank's own files are overwritten)."""
    from safetensors.torch import save_file

    folder = pathlib.Path(path)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"HeadRank: cannot save to '{folder}': it is a file")
    if (folder / META_FILE).exists():
        meta = _read_json(folder / META_FILE, folder)
        if (meta.get("type"), meta.get("format")) != (ARTIFACT_TYPE, ARTIFACT_FORMAT):
            raise ValueError(f"HeadRank: '{folder}' holds a {meta.get('type')}.{meta.get('format')} artifact; "
                             f"save the reranker to another folder")
    reader, _, heads = reranker.engine()
    adapter = getattr(reranker, "adapter_", None)
    base = adapter.base_model if adapter is not None and adapter.base_model is not None else reader.model
    folder.mkdir(parents=True, exist_ok=True)
    data = {
        "format_version": FORMAT_VERSION,
        "model": reranker.model if isinstance(reranker.model, str) else None,
        "model_class": type(base).__name__,
        "model_shape": fingerprint(base),
        "settings": reranker.settings.values(SCORES),
        "heads": heads.to_dict(),
        "adapter": None,
        "adapter_sha256": None,
    }
    adapter_path = folder / ADAPTER_FILE
    if adapter is not None and adapter.config is not None:
        tmp = folder / (ADAPTER_FILE + ".tmp")
        save_file({k: v.detach().cpu().float().contiguous() for k, v in adapter.weights.items()}, str(tmp),
                  metadata={"format": "pt", "producer": "pyterrier-headrank"})
        os.replace(tmp, adapter_path)
        data["adapter"] = adapter.config.to_dict()
        data["adapter_sha256"] = sha256_of(adapter_path)
    elif adapter_path.exists():
        adapter_path.unlink()
    summary = dict(getattr(reranker, "fit_summary_", None) or {})
    profile = getattr(reranker, "head_profile_", None)
    if profile is not None:
        summary["head_profile"] = profile.to_dict()
    _write_json(folder / SUMMARY_FILE, summary)
    _write_json(folder / SETTINGS_FILE, data)
    _write_json(folder / META_FILE, {"type": ARTIFACT_TYPE, "format": ARTIFACT_FORMAT,
                                     "package_hint": "pyterrier-headrank"})
    return str(folder)


def _read_json(path: pathlib.Path, folder: pathlib.Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"HeadRank: '{path.name}' in '{folder}' is corrupt ({err})") from err
    if not isinstance(data, dict):
        raise ValueError(f"HeadRank: '{path.name}' in '{folder}' is corrupt (not a JSON object)")
    return data


def read_folder(path) -> dict:
    """The validated contents of ``headrank.json`` in ``path``, with clear errors for anything else."""
    folder = pathlib.Path(path)
    if not folder.exists():
        raise FileNotFoundError(f"HeadRank: no folder '{folder}'")
    if not folder.is_dir():
        raise ValueError(f"HeadRank: '{folder}' is a file, not a HeadRank folder (made by HeadRank.save)")
    settings_path = folder / SETTINGS_FILE
    if not settings_path.exists():
        meta = {}
        if (folder / META_FILE).exists():
            meta = _read_json(folder / META_FILE, folder)
        if meta.get("type") and (meta.get("type"), meta.get("format")) != (ARTIFACT_TYPE, ARTIFACT_FORMAT):
            raise ValueError(f"HeadRank: '{folder}' is a {meta.get('type')}.{meta.get('format')} artifact, not a "
                             f"HeadRank reranker")
        raise FileNotFoundError(f"HeadRank: '{folder}' has no {SETTINGS_FILE}; it is not a folder made by "
                                f"HeadRank.save (or the file is missing)")
    data = _read_json(settings_path, folder)
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        raise ValueError(f"HeadRank: '{folder}' has format version {version!r}; this pyterrier-headrank reads "
                         f"version {FORMAT_VERSION}")
    for key in ("model_shape", "settings", "heads"):
        if not isinstance(data.get(key), dict):
            raise ValueError(f"HeadRank: {SETTINGS_FILE} in '{folder}' is corrupt (no valid '{key}')")
    return data


def _read_adapter(folder: pathlib.Path, data: dict) -> Optional[dict]:
    if data.get("adapter") is None:
        return None
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = folder / ADAPTER_FILE
    if not path.exists():
        raise FileNotFoundError(f"HeadRank: '{folder}' names LoRA adapters but {ADAPTER_FILE} is missing")
    expected = data.get("adapter_sha256")
    if expected and sha256_of(path) != expected:
        raise ValueError(f"HeadRank: {ADAPTER_FILE} in '{folder}' is corrupt (its SHA-256 differs from the one "
                         f"recorded in {SETTINGS_FILE})")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"HeadRank: {ADAPTER_FILE} in '{folder}' is corrupt ({err})") from err


def read_fit(path) -> FitParts:
    """The contents of a folder written by :func:`save`, validated, with clear errors for anything else."""
    folder = pathlib.Path(path)
    data = read_folder(folder)
    try:
        heads = HeadSet.from_dict(data["heads"])
        config = AdapterConfig.from_dict(data["adapter"]) if data.get("adapter") is not None else None
    except ValueError as err:
        raise ValueError(f"HeadRank: {SETTINGS_FILE} in '{folder}' is corrupt ({err})") from err
    adapter = SavedAdapter(config, _read_adapter(folder, data), data["model_shape"], f"'{folder}'")
    summary = _read_json(folder / SUMMARY_FILE, folder) if (folder / SUMMARY_FILE).exists() else {}
    profile = summary.pop("head_profile", None)
    # folders saved before a setting existed were fitted without it: first-stage order, no fusion, no correction
    settings = {"order": "first-stage", "fuse": None, "slot_bias": None,
                **{k: v for k, v in data["settings"].items() if k in SETTINGS}}
    return FitParts(data.get("model"), data.get("model_class"), heads, settings, adapter,
                    HeadProfile.from_dict(profile) if profile else None, summary or None)


def read_fit_once(path) -> FitParts:
    """:func:`read_fit`, remembered per folder while its files are unchanged: ``HeadRank(model)`` reads the model's
    registered fit at every construction, and the folder (with its head profile) need not be parsed each time.
    The parts are shared, so callers must not change them."""
    folder = pathlib.Path(path).resolve()
    stamps = tuple((f.name, f.stat().st_mtime_ns) for f in sorted(folder.iterdir()) if f.is_file()) \
        if folder.is_dir() else ()
    return _read_fit_with_stamps(folder, stamps)


@functools.lru_cache(maxsize=16)
def _read_fit_with_stamps(folder: pathlib.Path, stamps: tuple) -> FitParts:
    return read_fit(folder)
