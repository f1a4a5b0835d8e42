"""Which fit a model uses by default: the registry of shipped fits.

``HeadRank(model)`` without ``heads`` uses the fit registered for ``model``: its heads, prompt order, slot
correction, fusion weight, passage length and adapter, each unless the caller set it. The registry is data, not
code: ``pretrained/defaults.json`` maps a model alias to a folder in ``pretrained/``, so a fit shipped for another
model (a Qwen3 fit, once someone has one) becomes that model's default by adding a folder and a line there.
:func:`register_default` does the same at run time, for a fit of your own::

    register_default("qwen3-4b", "fits/qwen3-4b-dl")    # now HeadRank("qwen3-4b") uses it

A model without a registered fit uses the training-free head set and warns once that fitting helps.
"""
from __future__ import annotations

import functools
import json
import pathlib
import threading
import warnings
from typing import Dict, Optional, Union

from .artifact import PRETRAINED, read_fit

DEFAULTS_FILE = PRETRAINED / "defaults.json"
_REGISTERED: Dict[str, pathlib.Path] = {}
_WARNED: set = set()
_LOCK = threading.Lock()


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
