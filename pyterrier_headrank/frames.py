"""Small helpers on PyTerrier result frames (``qid, docno, score, rank, ...``) shared across the package."""
from __future__ import annotations

import pandas as pd


def add_ranks(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with a ``rank`` column from ``score`` per ``qid`` (0 = best; ties in row order).

    The same ranks as ``pt.model.add_ranks``, computed without its in-place ``drop``, which warns on pandas 3.1
    (PDEP-8); a new frame is returned and ``frame`` is left as it is.
    """
    ranks = frame.groupby("qid", sort=False)["score"].rank(ascending=False, method="first")
    return frame.drop(columns=["rank"], errors="ignore").assign(rank=ranks.astype("int64") - 1)
