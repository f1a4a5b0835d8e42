"""Baselines that HeadRank is compared with: ICR (all-heads attention, training-free) and RankGPT (generative).

>>> from pyterrier_headrank.baselines import ICR, RankGPT
>>> pipeline = bm25 % 20 >> ICR("smollm2-135m")
"""
from .icr import ICR
from .permutation import ParsedPermutation, parse_permutation
from .rankgpt import RankGPT, sliding_windows

__all__ = ["ICR", "RankGPT", "parse_permutation", "ParsedPermutation", "sliding_windows"]
