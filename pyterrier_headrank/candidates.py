"""Candidate lists: one query's candidates in first-stage order, as every listwise step reads them.

:func:`candidate_lists` is the one way from a PyTerrier result frame to lists; reranking
(:class:`~pyterrier_headrank.listwise.ListwiseReranker`), the score cache, training (which adds relevance grades,
:func:`with_grades`) and :func:`~pyterrier_headrank.explain.explain_results` all use it.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import List, Optional

import numpy as np
import pandas as pd

from .frames import clean_text, first_stage_scores, query_of


@dataclass
class CandidateList:
    """One query's candidates in first-stage order.

    ``texts`` are the passage texts as the reranker reads them (a missing text is empty); ``first_stage`` the first
    stage's scores (its ``score`` column, else ``-position``); ``rows`` the candidates' row labels in the frame the
    list was read from, so that scores can be written back; ``labels`` relevance grades, where known (training).
    """

    qid: object
    query: str
    docnos: List[str]
    texts: List[str]
    first_stage: np.ndarray
    rows: Optional[np.ndarray] = None
    labels: Optional[np.ndarray] = None

    def __len__(self) -> int:
        return len(self.docnos)


def candidate_lists(frame: pd.DataFrame, text_field: str, name: str) -> List[CandidateList]:
    """The candidate lists of ``frame``, one per qid in the frame's order. ``frame`` must already be in first-stage
    order (:func:`~pyterrier_headrank.frames.first_stage_order`). Each qid needs one non-empty query text; errors
    name ``name`` (the reranker, the cache, ``fit``)."""
    return [CandidateList(qid, query_of(group["query"], qid, name), [str(d) for d in group["docno"]],
                          [clean_text(t) for t in group[text_field]], first_stage_scores(group),
                          rows=group.index.to_numpy())
            for qid, group in frame.groupby("qid", sort=False)]


def with_grades(lists: List[CandidateList], qrels: pd.DataFrame) -> List[CandidateList]:
    """``lists`` with ``labels``: each candidate's grade in ``qrels`` (qid, docno, label), 0 for unjudged and for
    negative grades."""
    grades = {(str(q), str(d)): float(label) for q, d, label in qrels[["qid", "docno", "label"]].itertuples(index=False)}
    return [dataclasses.replace(item, labels=np.array([max(0.0, grades.get((str(item.qid), d), 0.0))
                                                       for d in item.docnos]))
            for item in lists]
