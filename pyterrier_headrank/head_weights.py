"""Head weights learned from judged lists: a pairwise logistic model over every head's calibrated attention mass.

Selection (:meth:`~pyterrier_headrank.selection.HeadProfile.select`) keeps ``k`` heads with weight 1 each. HeadRank's
score is a weighted sum of head masses, ``sum_h w_h * mass_h``, so the weights can be learned instead: for every pair
of candidates of one list with different relevance grades, the better one should score higher. That is a logistic
regression on the pair's mass differences (RankNet with a linear scorer), with an L2 penalty that keeps the weights of
uninformative heads near zero. The result is an ordinary :class:`~pyterrier_headrank.heads.HeadSet` (every head of
layers ``0..max_layer`` with its weight), so a reranker uses it, saves it and stops its pass at ``max_layer`` as it
does for selected heads.

Features are divided by their standard deviation over the training pairs before the fit, so that one strength suits
heads of any scale, and the weights are mapped back. They are scaled so that the largest *standardised* weight (a
weight times the spread of its head's mass differences) is 1: a head's share of the score is then readable from its
standardised weight, and attention-only scores come out of order 1 (rankings and z-scored fusion do not depend on
the scale).
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np

from .heads import HeadSet

#: Inverse L2 strength per pair (as ``C`` in scikit-learn's ``LogisticRegression``); chosen by cross-fitting in
#: ``benchmarks/default_fit.py``.
DEFAULT_C = 1e-3


def pair_differences(masses: Sequence[np.ndarray], labels: Sequence[np.ndarray]) -> np.ndarray:
    """``[pairs, heads]``: for each list (``masses[i]`` is ``[heads, n]``, ``labels[i]`` its ``n`` grades) and each
    pair of its candidates with different grades, the better candidate's masses minus the other's."""
    rows: List[np.ndarray] = []
    for mass, grades in zip(masses, labels):
        grades = np.asarray(grades)
        better, worse = np.nonzero(grades[:, None] > grades[None, :])
        if len(better):
            rows.append((mass[:, better] - mass[:, worse]).T)
    if not rows:
        raise ValueError("HeadRank: learning head weights needs lists with at least two relevance grades")
    return np.concatenate(rows).astype(np.float64)


def fit_pairwise_logistic(differences: np.ndarray, c: float = DEFAULT_C, max_iter: int = 200,
                          pair_weights: Optional[np.ndarray] = None) -> np.ndarray:
    """Weights minimising ``c * sum_i a_i log(1 + exp(-w . d_i)) + |w|^2 / 2`` over the rows ``d_i`` (L-BFGS,
    float64). ``pair_weights`` are the ``a_i`` (as scikit-learn's ``sample_weight``; default 1 each): they let
    ``benchmarks/weight_levers.py`` weigh pairs by their list or their grade gap."""
    import torch

    if not (np.isfinite(c) and c > 0):
        raise ValueError(f"HeadRank: the head-weight strength c={c!r} must be a positive number")
    d = torch.from_numpy(np.ascontiguousarray(differences))
    a = torch.ones(len(d), dtype=torch.float64) if pair_weights is None else torch.as_tensor(pair_weights,
                                                                                            dtype=torch.float64)
    if a.shape != (len(d),) or not bool(torch.isfinite(a).all() and (a >= 0).all()):
        raise ValueError(f"HeadRank: pair_weights must be {len(d)} finite non-negative numbers, one per pair")
    w = torch.zeros(d.shape[1], dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.LBFGS([w], lr=1.0, max_iter=max_iter, tolerance_grad=1e-9, tolerance_change=1e-12,
                                  line_search_fn="strong_wolfe")

    def loss():
        optimiser.zero_grad()
        value = c * (a * torch.nn.functional.softplus(-(d @ w))).sum() + 0.5 * (w * w).sum()
        value.backward()
        return value

    optimiser.step(loss)
    return w.detach().numpy().copy()


def fit_standardised(differences: np.ndarray, c: float = DEFAULT_C,
                     pair_weights: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray]:
    """``(standardised weights, scale)``: the pairwise logistic fit on the pair differences divided by their standard
    deviation per feature (so that one ``c`` suits features of any scale); the weights on the original features are
    ``standardised / scale``. A feature that never differs keeps a scale of 1."""
    scale = differences.std(axis=0)
    scale[scale == 0] = 1.0
    return fit_pairwise_logistic(differences / scale, c, pair_weights=pair_weights), scale


def learn_head_weights(masses: Sequence[np.ndarray], labels: Sequence[np.ndarray], num_heads: int, max_layer: int,
                       c: float = DEFAULT_C, name: str = None) -> HeadSet:
    """Every head of layers ``0..max_layer`` with a learned weight.

    ``masses[i]`` is list ``i``'s ``[heads, n]`` calibrated masses with heads in layer-major order (at least
    ``(max_layer + 1) * num_heads`` rows, as :func:`~pyterrier_headrank.selection.read_all_heads` returns them);
    ``labels[i]`` its ``n`` relevance grades.
    """
    used = (max_layer + 1) * num_heads
    if any(m.shape[0] < used for m in masses):
        raise ValueError(f"HeadRank: learning weights for layers 0-{max_layer} needs {used} heads per list")
    standardised, scale = fit_standardised(pair_differences([m[:used] for m in masses], labels), c)
    largest = np.abs(standardised).max()
    weights = (standardised / largest if largest > 0 else standardised) / scale
    heads: Tuple[Tuple[int, int], ...] = tuple((layer, head) for layer in range(max_layer + 1)
                                               for head in range(num_heads))
    keep = [i for i, w in enumerate(weights) if w != 0.0]
    return HeadSet(tuple(heads[i] for i in keep), tuple(float(weights[i]) for i in keep),
                   name=name or f"weighted layers 0-{max_layer} c={c:g} on {len(masses)} lists")
