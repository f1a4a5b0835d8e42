"""Per-slot correction of position bias: the expected score of an irrelevant passage at each prompt slot.

Small models attend far more to the first and last passages of a prompt than to the middle ones, whatever they say.
``fit(..., slot_correction=True)`` measures, on the training lists only, the mean score that irrelevant passages
(grade 0) get at each slot, and the reranker subtracts it from every score at that slot. Slots are taken relative
to the window (``SLOT_BINS`` equal bins from the first slot to the last), so a correction learned on lists of 20 also
applies to windows of another length; the attention mass of a passage shrinks as windows grow, so it fits best at
the length it was learned on.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

#: Relative positions in a prompt window that the correction distinguishes.
SLOT_BINS = 20


def slot_bins(count: int, bins: int = SLOT_BINS) -> np.ndarray:
    """The bin of each of ``count`` prompt slots: slot ``j`` of ``n`` falls in ``round(j / (n - 1) * (bins - 1))``."""
    if count <= 1:
        return np.zeros(count, dtype=np.int64)
    return np.rint(np.arange(count) / (count - 1) * (bins - 1)).astype(np.int64)


def learn_slot_bias(scores: Sequence[np.ndarray], labels: Sequence[np.ndarray], bins: int = SLOT_BINS) -> tuple:
    """Mean score of the irrelevant passages (label 0) in each slot bin, over lists given in prompt order; a bin no
    irrelevant passage fell in gets the mean over all of them (0 when there are none)."""
    totals, counts = np.zeros(bins), np.zeros(bins)
    for values, grades in zip(scores, labels):
        values, irrelevant = np.asarray(values, dtype=np.float64), np.asarray(grades) <= 0
        where = slot_bins(len(values), bins)[irrelevant]
        np.add.at(totals, where, values[irrelevant])
        np.add.at(counts, where, 1)
    overall = totals.sum() / counts.sum() if counts.sum() else 0.0
    return tuple(float(t / c) if c else float(overall) for t, c in zip(totals, counts))


def corrected(scores: np.ndarray, bias: Optional[Sequence[float]]) -> np.ndarray:
    """``scores`` (one window, prompt order) minus the bias of each slot; unchanged when ``bias`` is None."""
    scores = np.asarray(scores, dtype=np.float64)
    if bias is None:
        return scores
    return scores - np.asarray(bias, dtype=np.float64)[slot_bins(len(scores), len(bias))]


def check_slot_bias(bias, owner: str = "HeadRank") -> Optional[tuple]:
    """``bias`` as a tuple of at least two finite floats, or None."""
    if bias is None:
        return None
    values = np.asarray(bias, dtype=np.float64).ravel()
    if values.size < 2 or not np.isfinite(values).all():
        raise ValueError(f"{owner}: slot_bias must be None or at least two finite numbers (one per slot bin), "
                         f"as fit(..., slot_correction=True) learns it")
    return tuple(float(v) for v in values)
