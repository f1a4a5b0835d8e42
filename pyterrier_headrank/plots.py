"""The head map: selection scores over the model's layers x heads, with the chosen heads marked (matplotlib)."""
from __future__ import annotations

from typing import Optional

import numpy as np

from .heads import HeadSet
from .selection import HeadProfile


def head_map(profile: HeadProfile, heads: Optional[HeadSet] = None, lam: float = 0.1, path: Optional[str] = None,
             what: str = "score", title: Optional[str] = None, ax=None):
    """Draw ``what`` (``"score"`` = ndcg - lam * entropy, ``"ndcg"`` or ``"entropy"``) per (layer, head).

    Layers run down the y axis, heads along x; heads beyond the profiled depth are blank; ``heads`` are boxed.
    Saves a PNG when ``path`` is given. Returns the matplotlib figure.
    """
    import matplotlib.pyplot as plt

    values = {"score": profile.scores(lam), "ndcg": profile.ndcg, "entropy": profile.entropy}.get(what)
    if values is None:
        raise ValueError(f"HeadRank: head_map shows 'score', 'ndcg' or 'entropy', not {what!r}")
    num_layers, num_heads = values.shape
    if ax is None:
        fig, ax = plt.subplots(figsize=(1.6 + 0.45 * num_heads, 1.2 + 0.22 * num_layers))
    else:
        fig = ax.figure
    shown = np.ma.masked_invalid(values)
    image = ax.imshow(shown, aspect="auto", cmap="viridis", interpolation="nearest")
    label = {"score": f"{profile.measure} - {lam:g} x entropy", "ndcg": profile.measure,
             "entropy": "normalised entropy"}[what]
    fig.colorbar(image, ax=ax, label=label)
    if heads is not None:
        for layer, head in heads.heads:
            ax.add_patch(plt.Rectangle((head - 0.5, layer - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2))
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_xticks(range(num_heads))
    step = max(1, num_layers // 15)
    ax.set_yticks(range(0, num_layers, step))
    ax.set_title(title or f"HeadRank head map\n{profile.num_queries} queries; boxed: selected", fontsize=9)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig
