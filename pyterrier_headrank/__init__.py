"""HeadRank for PyTerrier: rerank passages by the attention of a few selected heads of a decoder LLM.

>>> from pyterrier_headrank import HeadRank
>>> pipeline = bm25 % 20 >> HeadRank("smollm2-135m") % 10

The names below are imported on first use (PEP 562), so that ``import pyterrier_headrank`` and ``headrank --help``
do not pay for torch, transformers and PyTerrier until something needs them.
"""
import importlib

__version__ = "0.1.0"

#: public name -> the module that defines it
_EXPORTS = {
    "HeadRank": ".reranker",
    "HeadRankCache": ".cache",
    "HeadSet": ".heads",
    "FitSettings": ".training.settings",
    "selectivity": ".metrics",
    "ALIASES": ".models",
    "load_model": ".models",
}
__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
