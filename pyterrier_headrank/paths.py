"""The package's cache folder, for what it builds once and reuses: PISA indexes, model files joined from parts.

A module of its own, importing nothing heavy, so that model-name checks (the command line's) can find the cache
without importing PyTerrier.
"""
from __future__ import annotations

import os
import pathlib

CACHE_ENV = "HEADRANK_CACHE"


def cache_dir() -> pathlib.Path:
    """The cache folder: ``$HEADRANK_CACHE``, else ``~/.cache/pyterrier-headrank``."""
    if os.environ.get(CACHE_ENV):
        return pathlib.Path(os.environ[CACHE_ENV])
    return pathlib.Path.home() / ".cache" / "pyterrier-headrank"
