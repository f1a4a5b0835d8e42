"""Which fit a model uses by default: the registry of shipped fits.

``HeadRank(model)`` without ``heads`` uses the fit registered for ``model``: its heads, prompt order, slot
correction, fusion weight, passage length and adapter, each unless the caller set it. The registry is data, not
code: ``pretrained/defaults.json`` maps a model alias to a folder in ``pretrained/``, so a fit shipped for another
model (a Qwen3 fit, once someone has one) becomes that model's default by adding a folder and a line there.
:func:`register_default` does the same at run time, for a fit of your own::

    register_default("qwen3-4b", "fits/qwen3-4b-dl")    # now HeadRank("qwen3-4b") uses it

A model without a registered fit uses the training-free head set and warns once that fitting helps. The shipped
fits are also loadable by name (:func:`pretrained_names`, :func:`locate`).
"""
from __future__ import annotations

import functools
import json
import os
import pathlib
import re
import threading
import warnings
from typing import Dict, List, Optional, Union

from .folder import SETTINGS_FILE, read_fit

#: Fitted rerankers shipped inside the package, loadable by name (see ``pretrained/``).
PRETRAINED = pathlib.Path(__file__).resolve().parent / "pretrained"
DEFAULTS_FILE = PRETRAINED / "defaults.json"
_REGISTERED: Dict[str, pathlib.Path] = {}
_WARNED: set = set()
_LOCK = threading.Lock()
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w./-]+)?$")


class FitAdvice(UserWarning):
    """The one warning HeadRank gives by default: a model runs on training-free heads, and a fit would help."""


def _key(model: str) -> str:
    return model.strip().lower()


@functools.lru_cache(maxsize=None)
def _shipped() -> Dict[str, str]:
    """The shipped registry (package data, read once per process: every HeadRank construction consults it)."""
    return json.loads(DEFAULTS_FILE.read_text()) if DEFAULTS_FILE.is_file() else {}


def register_default(model: str, fit: Union[str, pathlib.Path, None]) -> None:
    """Make the fit in folder ``fit`` (or a shipped fit's name) the default of ``model``; ``None`` removes a run-time
    registration. The folder is read and checked now, so that a bad folder fails here, not at first use."""
    with _LOCK:
        if fit is None:
            _REGISTERED.pop(_key(model), None)
            return
        path = pathlib.Path(fit)
        if not path.exists() and (PRETRAINED / str(fit)).is_dir():
            path = PRETRAINED / str(fit)
        read_fit(path)
        _REGISTERED[_key(model)] = path


def default_fit_path(model) -> Optional[pathlib.Path]:
    """The folder of ``model``'s default fit, or None (a model given as an object, or none registered)."""
    if not isinstance(model, str):
        return None
    key = _key(model)
    if key in _REGISTERED:
        return _REGISTERED[key]
    name = _shipped().get(key)
    return PRETRAINED / name if name else None


def advise_fitting(model_name: str, owner: str = "HeadRank", named: bool = True) -> None:
    """Warn, once per model and process, that ``model_name`` runs on training-free heads and how to fit it
    (``named``: the model was given by name, so the command line can load it too)."""
    with _LOCK:
        if model_name in _WARNED:
            return
        _WARNED.add(model_name)
    how = (f"`headrank fit --model {model_name} ...` or `{owner}({model_name!r}).fit(train_results, qrels)`, then "
           f"register_default({model_name!r}, folder)" if named else "`reranker.fit(train_results, qrels)`")
    warnings.warn(
        f"{owner}: no fit is registered for model {model_name!r}, so it reads the training-free head set, which "
        f"ranks worse than a fit. Fit heads on your judged queries: {how}. Pass heads='zero-shot' to choose the "
        f"training-free heads and silence this.", FitAdvice, stacklevel=3)


def pretrained_names() -> List[str]:
    """The names of the fits shipped in ``pretrained/``."""
    if not PRETRAINED.is_dir():
        return []
    return sorted(p.name for p in PRETRAINED.iterdir() if (p / SETTINGS_FILE).is_file())


def locate(path_or_hub_id) -> Optional[pathlib.Path]:
    """The folder that ``path_or_hub_id`` names: a folder (see :func:`~pyterrier_headrank.folder.save`) or the name
    of a shipped fit (:func:`pretrained_names`, e.g. ``smollm2-135m-scifact``); ``None`` for a Hugging Face hub id
    (``org/name[@branch]``, see :func:`~pyterrier_headrank.hub.download`). Anything else is refused."""
    text = str(path_or_hub_id)
    if os.path.exists(text):
        return pathlib.Path(text)
    if text in pretrained_names():
        return PRETRAINED / text
    if _HUB_ID.match(text) and not text.startswith((".", "/")):
        return None
    raise FileNotFoundError(f"HeadRank: '{text}' is neither a folder, a shipped fit ({', '.join(pretrained_names())}) "
                            f"nor a Hugging Face hub id ('org/name')")
