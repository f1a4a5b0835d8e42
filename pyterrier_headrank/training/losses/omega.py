"""The list regulariser Omega(s) = gamma * H(p) - eta * Var(s_mid): a decided list whose middle zone is spread apart."""
from __future__ import annotations

import numpy as np
import torch


def regulariser(scores: torch.Tensor, middle: np.ndarray, gamma: float = 0.01, eta: float = 0.01,
                scale: float = 1.0) -> torch.Tensor:
    """``Omega(s) = gamma * H(softmax(s / scale)) - eta * Var(s_mid / scale)`` (population variance).

    The entropy term rewards a decided list (attention concentrated on few passages); the variance term rewards
    spreading the first stage's middle zone apart, where a reranker has the most to gain.
    """
    z = scores / scale
    log_p = torch.log_softmax(z, dim=0)
    entropy = -(log_p.exp() * log_p).sum()
    mid = torch.as_tensor(np.flatnonzero(middle), device=scores.device)
    variance = z[mid].var(unbiased=False) if len(mid) > 1 else z.sum() * 0.0
    return gamma * entropy - eta * variance
