"""Fusion of HeadRank's attention score with the first stage's score, and the choice of its weight.

``fused = w * z(first-stage score) + (1 - w) * z(attention score)``, each z-scored within the query's list (a list
whose scores are all equal z-scores to 0). ``w = 0`` is attention alone, ``w = 1`` the first stage alone. The weight
is a setting of the reranker (``HeadRank(fuse=w)``; ``None``: no fusion, pure attention); ``fit(..., fuse=True)``
chooses it on the validation queries and saved folders keep it.
"""
from __future__ import annotations

import numbers
from typing import Optional, Sequence, Tuple

import numpy as np
import pandas as pd
import pyterrier as pt

from .frames import add_ranks

#: Weights tried when a fit chooses one: 0, 0.1, ..., 1.
WEIGHT_GRID = tuple(np.round(np.linspace(0, 1, 11), 2))


def check_weight(weight: Optional[float], owner: str = "HeadRank") -> Optional[float]:
    """``weight`` as a float in [0, 1], or None (no fusion); anything else is refused with the owner's name."""
    if weight is None:
        return None
    if isinstance(weight, (bool, np.bool_)) or not isinstance(weight, numbers.Real) or not 0.0 <= float(weight) <= 1.0:
        raise ValueError(f"{owner}: fuse={weight!r} must be None (pure attention) or a weight in [0, 1] of the first "
                         f"stage's score")
    return float(weight)


def zscore(values: np.ndarray) -> np.ndarray:
    """Standardised within one list; a constant list gives zeros."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return values
    std = values.std()
    return (values - values.mean()) / (std if std > 0 else 1.0)


def fuse_scores(first_stage: np.ndarray, attention: np.ndarray, weight: float) -> np.ndarray:
    """One list's fused scores (see the module docstring)."""
    return weight * zscore(first_stage) + (1.0 - weight) * zscore(attention)


def fuse(first_stage: pd.DataFrame, reranked: pd.DataFrame, weight: float) -> pd.DataFrame:
    """``reranked`` with its ``score`` fused with the first stage's ``score`` of the same (qid, docno); re-ranked.

    Rows are paired by (qid, docno), compared as strings; the output keeps ``reranked``'s own qid and docno values.
    A (qid, docno) that appears twice on either side is refused: which score goes with which row would be a guess.
    """
    reranked = reranked.reset_index(drop=True)
    first = paired_first_stage(first_stage, reranked)
    attention = pd.to_numeric(reranked["score"], errors="coerce").to_numpy(np.float64, na_value=np.nan)
    for values, whose in ((first, "first stage's"), (attention, "reranker's")):
        if not np.isfinite(values).all():
            raise ValueError(f"HeadRank fusion: some of the {whose} scores are not finite numbers (NaN, infinite or "
                             f"not numbers); z-scores over them would be NaN for the whole list")
    fused = np.empty(len(reranked))
    for rows in reranked.groupby(reranked["qid"].astype(str), sort=False).indices.values():
        fused[rows] = fuse_scores(first[rows], attention[rows], weight)
    out = add_ranks(reranked.assign(score=fused))
    return out.sort_values(["qid", "rank"], kind="stable").reset_index(drop=True)


def paired_first_stage(first_stage: pd.DataFrame, reranked: pd.DataFrame) -> np.ndarray:
    """The first stage's score of each row of ``reranked`` (by qid and docno as strings), as floats; an error
    naming HeadRank fusion where a row has no first-stage score or a (qid, docno) is ambiguous."""
    def keys(frame: pd.DataFrame, whose: str) -> pd.MultiIndex:
        index = pd.MultiIndex.from_arrays([frame["qid"].astype(str), frame["docno"].astype(str)])
        if index.has_duplicates:
            qid, docno = index[index.duplicated()][0]
            raise ValueError(f"HeadRank fusion: the {whose} results have qid {qid!r}, docno {docno!r} more than once; "
                             f"fusion pairs scores by (qid, docno), so each pair must be unique")
        return index

    first_keys, wanted = keys(first_stage, "first stage's"), keys(reranked, "reranker's")
    position = first_keys.get_indexer(wanted)
    if (position < 0).any():
        qid, docno = wanted[position < 0][0]
        raise ValueError(f"HeadRank fusion: {int((position < 0).sum())} reranked document(s) are not in the "
                         f"first-stage results (e.g. qid {qid!r}, docno {docno!r})")
    scores = pd.to_numeric(first_stage["score"], errors="coerce").to_numpy(np.float64, na_value=np.nan)
    return scores[position]


def best_weight(lists: Sequence[Tuple[str, Sequence[str], np.ndarray, np.ndarray]], measure,
                grid: Sequence[float] = WEIGHT_GRID) -> Tuple[float, pd.DataFrame]:
    """The weight with the best mean ``measure`` over ``lists`` of (qid, docnos, first-stage scores, attention
    scores); ties go to the smaller weight (more attention). ``measure(runs)`` takes ``{qid: (docnos, scores)}``.

    Returns the weight and the table of the measure per weight.
    """
    rows = []
    for weight in grid:
        runs = {qid: (list(docnos), fuse_scores(first, attention, float(weight)))
                for qid, docnos, first, attention in lists}
        rows.append({"weight": float(weight), "ndcg10": float(measure(runs))})
    table = pd.DataFrame(rows)
    return float(table.loc[table["ndcg10"].idxmax(), "weight"]), table


def fusion_weight(first_stage: pd.DataFrame, reranked: pd.DataFrame, qrels: pd.DataFrame,
                  grid: Sequence[float] = WEIGHT_GRID) -> Tuple[float, pd.DataFrame]:
    """:func:`best_weight` for result frames: the first stage's and the reranker's (same qid, docno), by nDCG@10."""
    from .metrics import ndcg10

    judged = qrels[["qid", "docno", "label"]].astype({"qid": str, "docno": str})
    reranked = reranked.astype({"qid": str, "docno": str}).reset_index(drop=True)
    first = paired_first_stage(first_stage, reranked)
    lists = [(qid, reranked["docno"].iloc[rows].tolist(), first[rows], reranked["score"].iloc[rows].to_numpy(float))
             for qid, rows in reranked.groupby("qid", sort=False).indices.items()]
    return best_weight(lists, lambda runs: ndcg10(runs, judged), grid)


class ScoreFusion(pt.Transformer):
    """Runs ``reranker`` and fuses its score with the incoming first-stage ``score`` (see :func:`fuse`)."""

    def __init__(self, reranker: pt.Transformer, weight: float):
        if not 0.0 <= weight <= 1.0:
            raise ValueError("HeadRank fusion: weight must be within [0, 1]")
        self.reranker = reranker
        self.weight = float(weight)

    def transform(self, inp: pd.DataFrame) -> pd.DataFrame:
        if "score" not in inp.columns:
            raise ValueError("HeadRank fusion: the input needs the first stage's 'score' column")
        return fuse(inp, self.reranker.transform(inp), self.weight)

    def __repr__(self) -> str:
        return f"ScoreFusion({self.reranker!r}, weight={self.weight:g})"
