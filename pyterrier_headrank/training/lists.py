"""Training lists: the candidate lists of a result frame (:func:`~pyterrier_headrank.candidates.candidate_lists`)
with their relevance grades from qrels."""
from __future__ import annotations

from typing import List

import pandas as pd

from ..candidates import CandidateList, candidate_lists, with_grades
from ..frames import check_numeric_score, first_stage_order

NEEDS_CANDIDATES = ("HeadRank.fit needs candidate lists (columns qid, query, docno and the text column), not just "
                    "topics: fit it inside a pipeline, e.g. `(bm25 % 20 >> text_loader >> HeadRank(...)).fit(topics, "
                    "qrels)` (PyTerrier runs the first stages), or pass the first stage's results with text.")


def check_qrels(qrels: pd.DataFrame, what: str = "qrels") -> pd.DataFrame:
    if qrels is None or not {"qid", "docno", "label"} <= set(qrels.columns):
        raise ValueError(f"HeadRank.fit: {what} need the columns qid, docno, label (PyTerrier's qrels format)")
    out = qrels[["qid", "docno", "label"]].copy()
    out["qid"], out["docno"] = out["qid"].astype(str), out["docno"].astype(str)
    return out


def graded_lists(results: pd.DataFrame, qrels: pd.DataFrame, text_field: str = "text",
                 what: str = "training") -> List[CandidateList]:
    """The candidate lists of a result frame (first-stage order: rank, else score, else as given; qids as strings),
    each candidate graded by ``qrels`` (0 for unjudged). Refused when no candidate of any list is judged relevant:
    nothing could be learned or measured from them, and the usual cause is qids or docnos spelled differently in
    the results and the qrels. ``what`` names the lists in errors ("training", "validation")."""
    if results is None or not isinstance(results, pd.DataFrame):
        raise ValueError(NEEDS_CANDIDATES)
    missing = {"qid", "query", "docno", text_field} - set(results.columns)
    if missing:
        raise ValueError(f"{NEEDS_CANDIDATES} (missing columns: {sorted(missing)})")
    check_numeric_score(results, "HeadRank.fit")
    qrels = check_qrels(qrels)
    lists = candidate_lists(first_stage_order(results.astype({"qid": str})), text_field, "HeadRank.fit")
    if not lists:
        raise ValueError(f"HeadRank.fit: the {what} frame has no candidates")
    graded = with_grades(lists, qrels)
    if not any((item.labels > 0).any() for item in graded):
        raise ValueError(f"HeadRank.fit: none of the {len(graded)} {what} lists has a candidate that the qrels judge "
                         f"relevant (label > 0); check that the qids and docnos of the results and the qrels match "
                         f"(e.g. qid {graded[0].qid!r}, docno {graded[0].docnos[0]!r} in the results; qrels have "
                         f"{len(qrels)} rows)")
    return graded
