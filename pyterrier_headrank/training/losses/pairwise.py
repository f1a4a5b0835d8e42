"""The pairwise preference loss (Bradley-Terry, optionally DPO-style against the starting model)."""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F


def pairwise_loss(scores: torch.Tensor, pairs: np.ndarray, beta: float = 1.0, scale: float = 1.0,
                  reference: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Bradley-Terry loss ``mean(-log sigmoid(beta * margin / scale))`` over ``pairs``; 0 without pairs.

    ``margin = s_w - s_l``, or with ``reference`` (the frozen model's scores) ``(s_w - s_l) - (r_w - r_l)`` (DPO).
    """
    if len(pairs) == 0:
        return scores.sum() * 0.0
    w = torch.as_tensor(pairs[:, 0], device=scores.device)
    l = torch.as_tensor(pairs[:, 1], device=scores.device)
    margin = scores[w] - scores[l]
    if reference is not None:
        margin = margin - (reference[w] - reference[l]).detach()
    return -F.logsigmoid(beta * margin / scale).mean()
