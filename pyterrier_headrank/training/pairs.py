"""Preference pairs from relevance grades, and the middle zone of a first-stage list (what Omega spreads apart)."""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from ..metrics import in_middle_zone


def middle_zone(n: int) -> np.ndarray:
    """Mask of the middle zone of a first-stage list of ``n`` (:func:`pyterrier_headrank.metrics.in_middle_zone`,
    the definition that selectivity measures: for n = 20, positions 5 to 14, ranks 6 to 15)."""
    return np.asarray(in_middle_zone(np.arange(n), n), dtype=bool)


def preference_pairs(labels: Sequence[float], scores: Optional[Sequence[float]] = None,
                     max_pairs: Optional[int] = None, hard_negatives: int = 0) -> np.ndarray:
    """Preference pairs ``[P, 2]`` (winner index, loser index) for one candidate list.

    * Adjacent levels: for each pair of consecutive relevance grades *present in the list* (say 0 < 1 < 3), every
      passage of the higher grade over every passage of the lower one (1 over 0, 3 over 1). Binary qrels: every
      relevant passage over every irrelevant one. Unjudged passages should be given grade 0.
    * Hard negatives: each passage above the lowest grade also over the ``hard_negatives`` highest-scored passages of
      the lowest grade (needs ``scores``; adds pairs only for lists with three or more grades).
    * Order: hardest first: ascending ``scores[w] - scores[l]`` (wrongly ordered pairs, then near ties), ties by
      index; without ``scores``, by index. At most ``max_pairs`` pairs are kept.
    """
    labels = np.asarray(labels, dtype=np.float64)
    levels = np.unique(labels)
    pairs = set()
    for low, high in zip(levels[:-1], levels[1:]):
        for w in np.flatnonzero(labels == high):
            for l in np.flatnonzero(labels == low):
                pairs.add((int(w), int(l)))
    if hard_negatives > 0 and scores is not None and len(levels) > 1:
        scores_arr = np.asarray(scores, dtype=np.float64)
        negatives = np.flatnonzero(labels == levels[0])
        hardest = negatives[np.argsort(-scores_arr[negatives], kind="stable")[:hard_negatives]]
        for w in np.flatnonzero(labels > levels[0]):
            for l in hardest:
                pairs.add((int(w), int(l)))
    if not pairs:
        return np.zeros((0, 2), dtype=np.int64)
    ordered = sorted(pairs)
    if scores is not None:
        scores_arr = np.asarray(scores, dtype=np.float64)
        ordered.sort(key=lambda p: scores_arr[p[0]] - scores_arr[p[1]])  # stable: index order among equal margins
    if max_pairs is not None:
        ordered = ordered[: int(max_pairs)]
    return np.asarray(ordered, dtype=np.int64)
