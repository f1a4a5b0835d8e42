"""Training candidate lists from PyTerrier result frames and qrels (first-stage order, grades, first-stage scores)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import List

import numpy as np
import pandas as pd

from ..frames import clean_text, first_stage_order, first_stage_scores


@dataclass
class CandidateList:
    """One query's candidates in first-stage order, with their grades (0 for unjudged)."""

    qid: str
    query: str
    docnos: List[str]
    texts: List[str]
    labels: np.ndarray
    first_stage: np.ndarray


NEEDS_CANDIDATES = ("HeadRank.fit needs candidate lists (columns qid, query, docno and the text column), not just "
                    "topics: fit it inside a pipeline, e.g. `(bm25 % 20 >> text_loader >> HeadRank(...)).fit(topics, "
                    "qrels)` (PyTerrier runs the first stages), or pass the first stage's results with text.")


def check_qrels(qrels: pd.DataFrame, what: str = "qrels") -> pd.DataFrame:
    if qrels is None or not {"qid", "docno", "label"} <= set(qrels.columns):
        raise ValueError(f"HeadRank.fit: {what} need the columns qid, docno, label (PyTerrier's qrels format)")
    out = qrels[["qid", "docno", "label"]].copy()
    out["qid"], out["docno"] = out["qid"].astype(str), out["docno"].astype(str)
    return out


def candidate_lists(results: pd.DataFrame, qrels: pd.DataFrame, text_field: str = "text") -> List[CandidateList]:
    """Group a result frame into :class:`CandidateList` objects (first-stage order: rank, else score, else as given)."""
    if results is None or not isinstance(results, pd.DataFrame):
        raise ValueError(NEEDS_CANDIDATES)
    missing = {"qid", "query", "docno", text_field} - set(results.columns)
    if missing:
        raise ValueError(f"{NEEDS_CANDIDATES} (missing columns: {sorted(missing)})")
    qrels = check_qrels(qrels)
    grades = {(q, d): float(l) for q, d, l in qrels.itertuples(index=False)}
    frame = first_stage_order(results.astype({"qid": str}))
    lists = []
    for qid, group in frame.groupby("qid", sort=False):
        docnos = group["docno"].astype(str).tolist()
        texts = [clean_text(t) for t in group[text_field]]
        scores = first_stage_scores(group)
        lists.append(CandidateList(qid, str(group["query"].iloc[0]), docnos, texts,
                                   np.array([max(0.0, grades.get((qid, d), 0.0)) for d in docnos]), scores))
    if not lists:
        raise ValueError("HeadRank.fit: the training frame has no candidates")
    return lists
