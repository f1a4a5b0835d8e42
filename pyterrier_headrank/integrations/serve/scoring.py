"""Rank several requests' documents in one call to the reranker, with the same result as ``HeadRank.rank`` on each.

The batching queue (:mod:`.batching`) hands over the requests that arrived together; :func:`rank_lists` scores them
with one :meth:`~pyterrier_headrank.listwise.ListwiseReranker.final_scores` call, so that their prompt windows share
forward passes where ``batch_size`` allows (on a GPU), and ranks each list as :meth:`ListwiseReranker.rank` does: the
query stripped, missing texts as empty strings, the documents' given order standing in for first-stage scores, ties
kept in the given order. A failure in a group is retried request by request, so that one request that cannot be
scored does not take the others' results with it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence, Tuple, Union

import numpy as np

from pyterrier_headrank.frames import clean_query, clean_text, order_scores


@dataclass(frozen=True)
class Ranked:
    """One request's ranking: document positions best first, and each position's score (in input order)."""

    order: np.ndarray
    scores: np.ndarray

    def top(self, n: int) -> List[Tuple[int, float]]:
        """The best ``n`` documents as ``(index, score)`` pairs."""
        return [(int(i), float(self.scores[i])) for i in self.order[:n]]


def _cleaned(reranker, query: str, texts: Sequence[str]) -> Tuple[str, List[str]]:
    """The query and texts as ``rank`` reads them (an empty query raises ``ValueError``)."""
    return clean_query(query, "the query", type(reranker).__name__), [clean_text(t) for t in texts]


def _ranked(scores: np.ndarray) -> Ranked:
    scores = np.asarray(scores, dtype=np.float64)
    if not np.isfinite(scores).all():  # meaningless ranks, and not JSON: an error for this request, not a result
        raise FloatingPointError(f"{int((~np.isfinite(scores)).sum())} of {scores.size} scores are NaN or infinite")
    return Ranked(np.argsort(-scores, kind="stable"), scores)


def _rank_together(reranker, lists: Sequence[Tuple[str, Sequence[str]]]) -> List[Ranked]:
    """All lists in one call: ``final_scores`` where the reranker has it (HeadRank, ICR), else ``rank`` per list."""
    cleaned = [_cleaned(reranker, query, texts) for query, texts in lists]
    if hasattr(reranker, "final_scores"):
        scores = reranker.final_scores(cleaned, [order_scores(len(texts)) for _, texts in cleaned])
        return [_ranked(s) for s in scores]
    out = []
    for query, texts in cleaned:
        hits = reranker.rank(query, texts)
        scores = np.zeros(len(texts))
        for hit in hits:
            scores[hit["corpus_id"]] = hit["score"]
        out.append(Ranked(np.array([hit["corpus_id"] for hit in hits], dtype=np.int64), scores))
    return out


def rank_lists(reranker, lists: Sequence[Tuple[str, Sequence[str]]]) -> List[Union[Ranked, Exception]]:
    """One :class:`Ranked` per ``(query, texts)`` list, or the exception that list raised.

    The lists are scored together; if that fails, each is scored alone, and only the lists that fail alone get
    their exception.
    """
    try:
        return list(_rank_together(reranker, lists))
    except Exception as err:  # handed back to the request(s) it belongs to
        if len(lists) == 1:
            return [err]
    results: List[Union[Ranked, Exception]] = []
    for item in lists:
        try:
            results.append(_rank_together(reranker, [item])[0])
        except Exception as err:
            results.append(err)
    return results
