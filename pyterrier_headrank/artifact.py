"""Saving, loading and sharing fitted HeadRank rerankers: one folder, no pickle.

A folder holds:

* ``headrank.json``: format version, the model name and shape, the constructor settings, the head set, the adapter
  configuration and the SHA-256 of the adapter weights;
* ``adapter.safetensors``: the LoRA weights (only when the reranker was aligned);
* ``training.json``: what fit did (data sizes, settings, selected heads, per-head profile, training curve, timings);
* ``pt_meta.json``: PyTerrier's artifact metadata (type ``reranker``, format ``headrank``), so that
  ``pt.Artifact.load(path)`` finds :class:`~pyterrier_headrank.hub.HeadRankArtifact` through the
  ``pyterrier.artifact`` entry point.

This module reads and writes folders and knows nothing of :class:`HeadRank` (which builds itself from
:class:`FitParts`, see ``HeadRank.from_parts``). ``HeadRank.to_hf`` / ``HeadRank.from_hf`` move the same folder
through the Hugging Face hub as a PyTerrier artifact package (:func:`upload`, :func:`download`);
``HeadRank.from_pretrained`` accepts a folder, a shipped fit's name or a hub id (:func:`locate`).
"""
from __future__ import annotations

import functools
import json
import os
import pathlib
import re
import tempfile
from typing import NamedTuple, Optional

import numpy as np
import pyterrier as pt

from . import compat
from .attention import model_shape
from .heads import HeadSet
from .models import sha256_of
from .selection import HeadProfile
from .training.lora import Adapter, AdapterConfig

FORMAT_VERSION = 1
ARTIFACT_TYPE = "reranker"
ARTIFACT_FORMAT = "headrank"
SETTINGS_FILE = "headrank.json"
ADAPTER_FILE = "adapter.safetensors"
SUMMARY_FILE = "training.json"
META_FILE = "pt_meta.json"
#: Constructor arguments of HeadRank that a folder records (the model and heads are stored on their own): those that
#: decide the scores. Machine settings (``batch_size``, ``device``, ``dtype``, ``compile``) are chosen where the
#: folder is used, not where it was made; a ``batch_size`` in older folders is ignored.
SETTINGS = ("calibrate", "text_field", "max_passage_tokens", "max_query_tokens", "max_window_tokens",
            "max_window_passages", "n_anchors", "window_overlap", "rescore_top", "order", "fuse", "slot_bias")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w./-]+)?$")


def fingerprint(model) -> dict:
    """What a folder's heads and adapters depend on: the model's shape."""
    config = compat.text_config(model.config)
    layers, heads = model_shape(model)
    return {"layers": int(layers), "heads": int(heads), "hidden_size": int(config.hidden_size),
            "kv_heads": int(getattr(config, "num_key_value_heads", heads) or heads),
            "model_type": str(getattr(config, "model_type", type(model).__name__))}


class FittedState(Adapter):
    """An :class:`Adapter` (possibly without LoRA weights) that first checks the model is the one it was fitted on."""

    def __init__(self, config: Optional[AdapterConfig], state: Optional[dict], expected: dict, source: str):
        super().__init__(config, state)
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
        "settings": {name: getattr(reranker, name) for name in SETTINGS},
        "heads": heads.to_dict(),
        "adapter": None,
        "adapter_sha256": None,
    }
    adapter_path = folder / ADAPTER_FILE
    if adapter is not None and adapter.config is not None:
        tmp = folder / (ADAPTER_FILE + ".tmp")
        save_file({k: v.detach().cpu().float().contiguous() for k, v in adapter.state.items()}, str(tmp),
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


class FitParts(NamedTuple):
    """A fit: the model it was fitted on, its heads, its fitted settings, the fitted state (adapter; from a folder,
    with the model fingerprint it checks), and what fit recorded. What a folder holds (checked) and what
    :func:`~pyterrier_headrank.training.fit.fit` returns; ``HeadRank.from_parts`` and ``HeadRank.apply_fit`` take it."""

    model: Optional[str]
    model_class: Optional[str]
    heads: HeadSet
    settings: dict
    state: Optional[Adapter]
    profile: Optional[HeadProfile]
    summary: Optional[dict]


def read_fit(path) -> FitParts:
    """The contents of a folder written by :func:`save`, validated, with clear errors for anything else."""
    folder = pathlib.Path(path)
    data = read_folder(folder)
    try:
        heads = HeadSet.from_dict(data["heads"])
        config = AdapterConfig.from_dict(data["adapter"]) if data.get("adapter") is not None else None
    except ValueError as err:
        raise ValueError(f"HeadRank: {SETTINGS_FILE} in '{folder}' is corrupt ({err})") from err
    state = FittedState(config, _read_adapter(folder, data), data["model_shape"], f"'{folder}'")
    summary = _read_json(folder / SUMMARY_FILE, folder) if (folder / SUMMARY_FILE).exists() else {}
    profile = summary.pop("head_profile", None)
    # folders saved before a setting existed were fitted without it: first-stage order, no fusion, no correction
    settings = {"order": "first-stage", "fuse": None, "slot_bias": None,
                **{k: v for k, v in data["settings"].items() if k in SETTINGS}}
    return FitParts(data.get("model"), data.get("model_class"), heads, settings, state,
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


#: Fitted rerankers shipped inside the package, loadable by name (see ``pretrained/``).
PRETRAINED = pathlib.Path(__file__).resolve().parent / "pretrained"


def pretrained_names() -> list:
    return sorted(p.name for p in PRETRAINED.iterdir() if (p / "headrank.json").is_file()) if PRETRAINED.is_dir() else []


def locate(path_or_hub_id) -> Optional[pathlib.Path]:
    """The folder that ``path_or_hub_id`` names: a folder (see :func:`save`) or the name of a shipped fit
    (:func:`pretrained_names`, e.g. ``smollm2-135m-scifact``); ``None`` for a Hugging Face hub id
    (``org/name[@branch]``, see :func:`download`). Anything else is refused."""
    text = str(path_or_hub_id)
    if os.path.exists(text):
        return pathlib.Path(text)
    if text in pretrained_names():
        return PRETRAINED / text
    if _HUB_ID.match(text) and not text.startswith((".", "/")):
        return None
    raise FileNotFoundError(f"HeadRank: '{text}' is neither a folder, a shipped fit ({', '.join(pretrained_names())}) "
                            f"nor a Hugging Face hub id ('org/name')")


def upload(reranker, repo: str, **kwargs) -> None:
    """Save ``reranker`` to a temporary folder and upload it as a PyTerrier artifact package (needs network); the
    folder's ``pt_meta.json`` tells PyTerrier what it holds."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = save(reranker, os.path.join(tmp, "headrank"))
        pt.Artifact(folder).to_hf(repo, **kwargs)


def download(repo: str, **overrides):
    """Download (once, into PyTerrier's artifact cache) a reranker uploaded with :func:`upload`; returns the
    artifact that PyTerrier loads it as (``pyterrier_headrank.hub.HeadRankArtifact``)."""
    try:
        artifact = pt.Artifact.from_hf(repo, **overrides)
    except (OSError, ValueError) as err:
        raise OSError(f"HeadRank: could not fetch '{repo}' from the Hugging Face hub ({type(err).__name__}: {err}). "
                      f"Without network, download the artifact elsewhere and pass its folder to "
                      f"HeadRank.from_pretrained.") from err
    found = (getattr(artifact, "ARTIFACT_TYPE", None), getattr(artifact, "ARTIFACT_FORMAT", None))
    if found != (ARTIFACT_TYPE, ARTIFACT_FORMAT):
        raise ValueError(f"HeadRank: '{repo}' is a {type(artifact).__name__}, not a HeadRank reranker")
    return artifact
