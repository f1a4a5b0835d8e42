"""The head of a long list, rescored in one window, so that reranking a long list need not be worse than a short one.

A list longer than one prompt window is scored in several windows and merged (:mod:`~pyterrier_headrank.windows`).
Even well merged, a small model's attention over many candidates can promote more wrong passages from deep in the
list than it finds right ones (docs/design.md). So HeadRank ranks a long list in two steps, as a cascade:

1. the merged window scores, fused at equal weight (:data:`POOL_WEIGHT`) with the first stage's *order* (its ranks,
   not its scores: the pool then depends on what every first stage gives, the same with or without a score column),
   choose a *pool* of ``rescore_top`` candidates: the first stage keeps most of its head, and a deep passage enters
   only on strong attention;
2. the pool is scored again in one window, like a short list, and ranked by those scores (fused as the reranker
   fuses); the other candidates follow, in their merged (fused) order.
"""
from __future__ import annotations

import numpy as np

from .frames import order_scores
from .fusion import fuse_scores

#: The first stage's weight when the pool is chosen (``w`` of :func:`~pyterrier_headrank.fusion.fuse_scores`).
POOL_WEIGHT = 0.5


def rescore_pool(merged: np.ndarray, size: int) -> np.ndarray:
    """Indices of the ``size`` candidates to rescore, in first-stage order (the order a window takes them in);
    ``merged`` holds the list's merged scores in first-stage order."""
    pooled = fuse_scores(order_scores(len(merged)), merged, POOL_WEIGHT)
    return np.sort(np.argsort(-pooled, kind="stable")[:size])


def pool_on_top(scores: np.ndarray, pool: np.ndarray, pool_scores: np.ndarray) -> np.ndarray:
    """``scores`` with the pool's candidates given ``pool_scores`` and everyone else shifted below the lowest of
    them (their order kept), so that the pool ranks first."""
    out = np.asarray(scores, dtype=np.float64).copy()
    rest = np.ones(len(out), dtype=bool)
    rest[pool] = False
    pool_scores = np.asarray(pool_scores, dtype=np.float64)
    if rest.any():
        out[rest] -= out[rest].max() - pool_scores.min() + 1.0
    out[pool] = pool_scores
    return out
