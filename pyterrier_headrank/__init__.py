"""HeadRank for PyTerrier: rerank passages by the attention of a few selected heads of a decoder LLM.

>>> from pyterrier_headrank import HeadRank
>>> pipeline = bm25 % 20 >> HeadRank("smollm2-135m") % 10
"""
from .fitting import FitSettings
from .heads import HeadSet
from .metrics import selectivity
from .models import ALIASES, load_model
from .reranker import HeadRank

__version__ = "0.1.0"
__all__ = ["HeadRank", "HeadSet", "FitSettings", "selectivity", "ALIASES", "load_model", "__version__"]
