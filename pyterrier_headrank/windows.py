"""Splitting a long candidate list into prompt windows, and merging window scores onto one scale.

Attention mass is relative to the other passages in the same prompt, so scores from two windows are not directly
comparable. HeadRank's choice: *shared anchors*. The first window takes candidates in first-stage order. Every later
window starts with the same ``n_anchors`` passages (the first-stage top ones, which sit in the first slots of window
one too, so they also share its position bias) followed by its own chunk. A later window's scores are shifted so
that the mean score of its anchors equals their mean score in window one. Anchors keep their window-one scores.
"""
from __future__ import annotations

from typing import List, Sequence

import numpy as np


def plan_windows(token_counts: Sequence[int], budget: int, max_passages: int, n_anchors: int) -> List[List[int]]:
    """Candidate indices of each window; windows after the first start with the anchors ``0..n_anchors-1``.

    ``token_counts`` are per-passage costs (text plus numbering), ``budget`` the passage tokens a window may hold.
    """
    count = len(token_counts)
    windows: List[List[int]] = []
    first, used = [], 0
    for i in range(count):
        if first and (used + token_counts[i] > budget or len(first) >= max_passages):
            break
        first.append(i)
        used += token_counts[i]
    windows.append(first)
    anchors = first[: min(n_anchors, max(0, len(first) - 1))]
    anchor_cost = sum(token_counts[i] for i in anchors)
    nxt = len(first)
    while nxt < count:
        window, used = list(anchors), anchor_cost
        while nxt < count and (len(window) == len(anchors) or
                               (used + token_counts[nxt] <= budget and len(window) < max_passages)):
            window.append(nxt)
            used += token_counts[nxt]
            nxt += 1
        windows.append(window)
    return windows


def merge_window_scores(windows: Sequence[Sequence[int]], scores: Sequence[np.ndarray], count: int,
                        n_anchors: int) -> np.ndarray:
    """One score per candidate from per-window scores (see the module docstring for the anchor shift)."""
    merged = np.full(count, np.nan, dtype=np.float64)
    first, first_scores = windows[0], np.asarray(scores[0], dtype=np.float64)
    merged[list(first)] = first_scores
    anchors = list(first[: min(n_anchors, max(0, len(first) - 1))])
    reference = first_scores[: len(anchors)].mean() if anchors else 0.0
    for window, window_scores in zip(windows[1:], scores[1:]):
        window_scores = np.asarray(window_scores, dtype=np.float64)
        shift = reference - window_scores[: len(anchors)].mean() if anchors else 0.0
        merged[list(window[len(anchors):])] = window_scores[len(anchors):] + shift
    assert not np.isnan(merged).any(), "every candidate is scored"
    return merged
