"""Splitting a long candidate list into prompt windows, and merging window scores onto one scale.

Attention mass is relative to the other passages in the same prompt, so scores from two windows are not directly
comparable. HeadRank's choice: *shared passages*. The first window takes candidates in first-stage order, as many as
fit. Every later window starts with the same ``n_anchors`` passages (the first-stage top ones, which sit in the first
slots of window one too, so they also share its position bias), then the last ``overlap`` passages of the window
before it, then its own chunk. The chunks of the later windows are balanced (a list of 100 gets windows of about 50,
25 and 25 new passages, not 50, 47 and 3: a window of six passages spreads attention on another scale altogether).

Merging (``merge_window_scores``) puts each later window on the scale of the passages scored before it, through the
passages it shares with them (:data:`MERGES`); a passage scored in several windows gets the mean of its aligned
scores, except the anchors, which keep their window-one scores (the reference scale). Why these choices:
docs/design.md.
"""
from __future__ import annotations

import math
from typing import List, Optional, Sequence

import numpy as np

from .fusion import zscore

#: How a later window is put on the merged scale: ``"anchors"`` shifts it so that its anchors' mean equals their
#: window-one mean (HeadRank 0.1.0); ``"shared"`` shifts it by the mean difference over every passage it shares with
#: earlier windows (anchors and overlap); ``"affine"`` also matches the spread (standard deviation) of those
#: passages; ``"zscore"`` standardises every window over its own passages and ignores what they share.
MERGES = ("anchors", "shared", "affine", "zscore")
#: the merge HeadRank uses
DEFAULT_MERGE = "shared"


def plan_windows(token_counts: Sequence[int], budget: int, max_passages: int, n_anchors: int, overlap: int = 0,
                 balanced: bool = True) -> List[List[int]]:
    """Candidate indices of each window; windows after the first start with the anchors ``0..n_anchors-1``, then
    the last ``overlap`` non-anchor candidates of the window before.

    ``token_counts`` are per-passage costs (text plus numbering), ``budget`` the passage tokens a window may hold.
    ``balanced=False`` fills every later window greedily (HeadRank 0.1.0, which could leave a tiny last window).
    """
    first = _fill(token_counts, [], list(range(len(token_counts))), budget, max_passages, None)
    rest = list(range(len(first), len(token_counts)))
    if not rest:
        return [first]
    anchors = _anchors(first, n_anchors)
    later = _later_windows(token_counts, first, anchors, rest, budget, max_passages, overlap, None)
    if balanced and len(later) > 1:
        cap = math.ceil(len(rest) / len(later))
        later = _later_windows(token_counts, first, anchors, rest, budget, max_passages, overlap, cap)
    return [first] + later


def _anchors(first: List[int], n_anchors: int) -> List[int]:
    """The anchors: the first window's top ``n_anchors`` candidates, always leaving it one of its own."""
    return list(first[: min(n_anchors, max(0, len(first) - 1))])


def _later_windows(token_counts, first, anchors, rest, budget, max_passages, overlap, cap) -> List[List[int]]:
    """The windows after ``first`` that cover ``rest``, each taking at most ``cap`` new candidates."""
    windows, previous = [], first
    while rest:
        carried = [i for i in previous if i not in anchors][-overlap:] if overlap > 0 else []
        window = _fill(token_counts, list(anchors) + carried, rest, budget, max_passages, cap)
        rest = rest[len(window) - len(anchors) - len(carried):]
        windows.append(window)
        previous = window
    return windows


def _fill(token_counts, start: List[int], candidates: List[int], budget: int, max_passages: int,
          cap: Optional[int]) -> List[int]:
    """``start`` plus candidates in order while they fit (always at least one new candidate)."""
    window, used, added = list(start), sum(token_counts[i] for i in start), 0
    for i in candidates:
        full = used + token_counts[i] > budget or len(window) >= max_passages or (cap is not None and added >= cap)
        if added and full:
            break
        window.append(i)
        used += token_counts[i]
        added += 1
    return window


def merge_window_scores(windows: Sequence[Sequence[int]], scores: Sequence[np.ndarray], count: int,
                        n_anchors: int, merge: str = DEFAULT_MERGE) -> np.ndarray:
    """One score per candidate from per-window scores (see the module docstring and :data:`MERGES`)."""
    if merge not in MERGES:
        raise ValueError(f"merge={merge!r} is not one of {', '.join(map(repr, MERGES))}")
    first = list(windows[0])
    anchors = set(_anchors(first, n_anchors))
    total, seen = np.zeros(count), np.zeros(count)
    for w, (window, window_scores) in enumerate(zip(windows, scores)):
        window_scores = np.asarray(window_scores, dtype=np.float64)
        if merge == "zscore":
            aligned = zscore(window_scores)
        elif w == 0:
            aligned = window_scores
        else:
            aligned = _aligned(window, window_scores, total / np.maximum(seen, 1), seen, anchors, merge)
        for i, score in zip(window, aligned):
            if w == 0 or i not in anchors:
                total[i] += score
                seen[i] += 1
    assert seen.all(), "every candidate is scored"
    return total / seen


def _aligned(window, window_scores, merged, seen, anchors, merge) -> np.ndarray:
    """``window_scores`` moved onto the scale of ``merged`` through the passages they share."""
    shared = [j for j, i in enumerate(window) if (i in anchors if merge == "anchors" else seen[i] > 0)]
    if not shared:
        return window_scores
    own, target = window_scores[shared], merged[[window[j] for j in shared]]
    scale = 1.0
    if merge == "affine" and len(shared) > 1 and own.std() > 0 and target.std() > 0:
        scale = target.std() / own.std()
    return (window_scores - own.mean()) * scale + target.mean()
