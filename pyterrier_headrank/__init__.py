"""HeadRank for PyTerrier: rerank passages by the attention of a few selected heads of a decoder LLM.

>>> from pyterrier_headrank import HeadRank
>>> pipeline = bm25 % 20 >> HeadRank("smollm2-135m") % 10

The names below are imported on first use (PEP 562), so that ``import pyterrier_headrank`` and ``headrank --help``
do not pay for torch, transformers and PyTerrier until something needs them; type checkers and IDEs read them from
the ``TYPE_CHECKING`` block.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .version import __version__

__all__ = [
    "HeadRank",
    "ListwiseReranker",
    "CandidateList",
    "RankingSettings",
    "HeadRankCache",
    "HeadSet",
    "FitSettings",
    "selectivity",
    "ALIASES",
    "load_model",
    "__version__",
]

if TYPE_CHECKING:
    from .cache import HeadRankCache
    from .candidates import CandidateList
    from .headrank import HeadRank
    from .heads import HeadSet
    from .listwise import ListwiseReranker
    from .metrics import selectivity
    from .models import ALIASES, load_model
    from .ranking_settings import RankingSettings
    from .training.settings import FitSettings

#: public name -> the module that defines it (imported when the name is first used)
_MODULES = {
    "HeadRank": ".headrank",
    "ListwiseReranker": ".listwise",
    "CandidateList": ".candidates",
    "RankingSettings": ".ranking_settings",
    "HeadRankCache": ".cache",
    "HeadSet": ".heads",
    "FitSettings": ".training.settings",
    "selectivity": ".metrics",
    "ALIASES": ".models",
    "load_model": ".models",
}


def __getattr__(name):
    if name in _MODULES:
        value = getattr(importlib.import_module(_MODULES[name], __name__), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
