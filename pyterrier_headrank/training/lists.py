"""Training lists: the candidate lists of a result frame (:func:`~pyterrier_headrank.candidates.candidate_lists`)
with their relevance grades from qrels."""
from __future__ import annotations

from typing import List

import pandas as pd

from ..candidates import CandidateList, candidate_lists, with_grades
from ..frames import first_stage_order

NEEDS_CANDIDATES = ("HeadRank.fit needs candidate lists (columns qid, query, docno and the text column), not just "
                    "topics: fit it inside a pipeline, e.g. `(bm25 % 20 >> text_loader >> HeadRank(...)).fit(topics, "
                    "qrels)` (PyTerrier runs the first stages), or pass the first stage's results with text.")


def check_qrels(qrels: pd.DataFrame, what: str = "qrels") -> pd.DataFrame:
    if qrels is None or not {"qid", "docno", "label"} <= set(qrels.columns):
        raise ValueError(f"HeadRank.fit: {what} need the columns qid, docno, label (PyTerrier's qrels format)")
    out = qrels[["qid", "docno", "label"]].copy()
    out["qid"], out["docno"] = out["qid"].astype(str), out["docno"].astype(str)
    return out


def graded_lists(results: pd.DataFrame, qrels: pd.DataFrame, text_field: str = "text") -> List[CandidateList]:
    """The candidate lists of a result frame (first-stage order: rank, else score, else as given; qids as strings),
    each candidate graded by ``qrels`` (0 for unjudged)."""
    if results is None or not isinstance(results, pd.DataFrame):
        raise ValueError(NEEDS_CANDIDATES)
    missing = {"qid", "query", "docno", text_field} - set(results.columns)
    if missing:
        raise ValueError(f"{NEEDS_CANDIDATES} (missing columns: {sorted(missing)})")
    qrels = check_qrels(qrels)
    lists = candidate_lists(first_stage_order(results.astype({"qid": str})), text_field, "HeadRank.fit")
    if not lists:
        raise ValueError("HeadRank.fit: the training frame has no candidates")
    return with_grades(lists, qrels)
