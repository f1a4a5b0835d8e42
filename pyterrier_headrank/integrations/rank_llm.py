"""rank_llm-style reranking: requests (a query with its first-stage candidates) in, reordered copies out.

Works on rank_llm's own ``Request``/``Query``/``Candidate`` objects, on the dataclasses of the same shape here, or on
plain dicts; rank_llm itself is not needed. :func:`aligned_scores` (run a reranker on a candidate frame and line its
scores up with the input rows) also serves :mod:`pyterrier_headrank.integrations.pyserini`.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import pandas as pd

from pyterrier_headrank.data.text import join_title

#: keys of a rank_llm candidate's ``doc`` that may hold its text, in the order they are tried
DOC_TEXT_KEYS = ("text", "segment", "contents", "content", "body", "passage")


def aligned_scores(reranker, frame: pd.DataFrame) -> pd.DataFrame:
    """Run ``reranker`` on ``frame`` and line its scores up with the input rows: ``hit_index, first_rank, new_score``.

    Rows are matched on ``hit_index`` where the reranker keeps extra columns (PyTerrier transformers do), else on
    (qid, docno) - then docnos must be unique per query.
    """
    result = reranker(frame) if callable(reranker) else reranker.transform(frame)
    if not isinstance(result, pd.DataFrame) or "score" not in result.columns:
        raise ValueError(f"HeadRank: the reranker returned no frame with a 'score' column ({type(result).__name__})")
    if len(result) != len(frame):
        raise ValueError(f"HeadRank: the reranker returned {len(result)} rows for {len(frame)} candidates")
    if "hit_index" in result.columns:
        index = result["hit_index"].astype("int64").to_numpy()
    else:
        if frame.duplicated(["qid", "docno"]).any():
            raise ValueError("HeadRank: duplicate docnos in one list and the reranker dropped the 'hit_index' column")
        position = {key: i for i, key in enumerate(zip(frame["qid"], frame["docno"]))}
        index = np.array([position[(q, d)] for q, d in zip(result["qid"].astype(str), result["docno"].astype(str))])
    if sorted(index.tolist()) != list(range(len(frame))):
        raise ValueError("HeadRank: the reranker's output does not hold every input candidate exactly once")
    return pd.DataFrame({"hit_index": index, "first_rank": frame["rank"].to_numpy()[index],
                         "new_score": result["score"].astype("float64").to_numpy()})


@dataclass
class Query:
    """A query, as rank_llm's ``rank_llm.data.Query``."""

    text: str
    qid: Union[str, int]


@dataclass
class Candidate:
    """A candidate document, as rank_llm's ``rank_llm.data.Candidate``: ``doc`` holds its fields (``text``/
    ``contents``/``segment``..., optionally ``title``)."""

    docid: Union[str, int]
    score: float
    doc: Dict[str, Any]


@dataclass
class Request:
    """A query with its first-stage candidates, best first, as rank_llm's ``rank_llm.data.Request``."""

    query: Query
    candidates: List[Candidate] = field(default_factory=list)


def _get(obj, name: str, what: str):
    """``obj[name]`` of a dict or ``obj.name`` of any other object, as rank_llm's types and plain dicts both are
    accepted; a ``ValueError`` naming ``what`` lacks it otherwise."""
    if isinstance(obj, Mapping):
        if name not in obj:
            raise ValueError(f"HeadRank: {what} has no {name!r} key")
        return obj[name]
    if not hasattr(obj, name):
        raise ValueError(f"HeadRank: {what} has no {name!r} attribute ({type(obj).__name__})")
    return getattr(obj, name)


def candidate_text(doc) -> str:
    """The text of a rank_llm candidate's ``doc``: the first of ``text``, ``segment``, ``contents``, ``content``,
    ``body``, ``passage``, with ``title`` joined before it where present; a plain string is its own text."""
    if isinstance(doc, str):
        return doc
    if not isinstance(doc, Mapping):
        raise ValueError(f"HeadRank: a candidate's doc must be a dict or a string, got {type(doc).__name__}")
    for key in DOC_TEXT_KEYS:
        if isinstance(doc.get(key), str):
            return join_title(doc.get("title"), doc[key])
    if isinstance(doc.get("title"), str):
        return doc["title"]
    raise ValueError(f"HeadRank: a candidate's doc has none of the text keys {DOC_TEXT_KEYS} (keys: {list(doc)})")


def _query_of(request, position: int) -> Tuple[str, Any]:
    """The query text and qid of a request (a bare string query is its own text; a missing qid is its position)."""
    query = _get(request, "query", f"request {position}")
    if isinstance(query, str):
        return query, position
    text = _get(query, "text", f"the query of request {position}")
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"HeadRank: the query text of request {position} must be a non-empty string")
    qid = _get(query, "qid", f"the query of request {position}") if (
        isinstance(query, Mapping) and "qid" in query or hasattr(query, "qid")) else position
    return text, qid


def _rescored(candidate, score: float):
    """A copy of ``candidate`` (dict or object, type kept) with the new ``score``, so that the input is not changed."""
    if isinstance(candidate, Mapping):
        return {**candidate, "score": score}
    out = copy.copy(candidate)
    out.score = score
    return out


def rerank_requests(reranker, requests: Sequence, k: Optional[int] = None) -> list:
    """Rerank rank_llm-style requests in one batch; each comes back as a reordered copy of the same type.

    A request is a :class:`Request` (or rank_llm's own, or any object of that shape) or a dict
    ``{"query": {"text", "qid"}, "candidates": [{"docid", "score", "doc": {"text" | "contents" | ...}}]}``.
    The copies hold the candidates best first with the reranker's scores in ``score``, cut to the best ``k`` when
    ``k`` is given; the input is not changed. All candidate lists go to the reranker as one frame, so that HeadRank
    batches their windows together.
    """
    if k is not None and int(k) < 1:
        raise ValueError(f"HeadRank: k must be >= 1 or None, got {k!r}")
    requests = list(requests)  # read twice below: a generator would be empty the second time
    rows, lists = [], []
    for position, request in enumerate(requests):
        text, _ = _query_of(request, position)
        candidates = list(_get(request, "candidates", f"request {position}"))
        lists.append(candidates)
        for i, candidate in enumerate(candidates):
            docid = _get(candidate, "docid", f"candidate {i} of request {position}")
            doc = _get(candidate, "doc", f"candidate {i} of request {position}")
            rows.append((str(position), text, str(docid), -float(i), i, candidate_text(doc), len(rows)))
    text_field = getattr(reranker, "text_field", "text")
    frame = pd.DataFrame(rows, columns=["qid", "query", "docno", "score", "rank", text_field, "hit_index"])
    new_scores = np.zeros(len(frame))
    if len(frame):
        scored = aligned_scores(reranker, frame)
        new_scores[scored["hit_index"].to_numpy()] = scored["new_score"].to_numpy()
    out, start = [], 0
    for request, candidates in zip(requests, lists):
        scores = new_scores[start:start + len(candidates)]
        start += len(candidates)
        order = np.argsort(-scores, kind="stable")[:k]
        reordered = [_rescored(candidates[i], float(scores[i])) for i in order]
        if isinstance(request, Mapping):
            out.append({**request, "candidates": reordered})
        else:
            copied = copy.copy(request)
            copied.candidates = reordered
            out.append(copied)
    return out


def rerank_request(reranker, request, k: Optional[int] = None):
    """Rerank one rank_llm-style request (see :func:`rerank_requests`); returns a reordered copy."""
    return rerank_requests(reranker, [request], k=k)[0]


__all__ = ["Query", "Candidate", "Request", "rerank_requests", "rerank_request", "candidate_text", "aligned_scores",
           "DOC_TEXT_KEYS"]
