"""``ListwiseReranker``: the written contract of every reranker here (HeadRank, ICR, RankGPT), and its PyTerrier side.

A listwise reranker scores each query's candidates together, as one ordered list, so a passage's score depends on
the whole list and its order. The contract:

* **settings**: ``settings`` is one :class:`~pyterrier_headrank.ranking_settings.ListSettings` (the attention
  rerankers: :class:`~pyterrier_headrank.ranking_settings.RankingSettings`); each setting reads and writes as an
  attribute too (``reranker.max_passage_tokens``). :meth:`scoring_settings` names everything that decides the
  scores: what a saved fit records and what the score cache keys on.
* **lazy loading**: the model loads on first use (:meth:`loaded`, once also when threads race), never at
  construction; a pickled reranker travels without it, so ``.parallel()`` workers load their own.
* **scoring**: :meth:`score_lists` scores ``(query, passages)`` lists, passages in first-stage order;
  :meth:`final_scores` is what the reranker ranks by (for HeadRank and ICR: fused and cascaded).
* **PyTerrier**: :meth:`transform` reads a result frame into :class:`~pyterrier_headrank.candidates.CandidateList`
  objects, ranks them by :meth:`final_scores` and returns every input column with new ``score`` and ``rank``;
  :meth:`rank` does the same for one list without PyTerrier.
"""
from __future__ import annotations

import threading
import warnings
from typing import List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd
import pyterrier as pt

from .candidates import CandidateList, candidate_lists
from .frames import (
    add_ranks,
    check_is_frame,
    check_numeric_score,
    check_qids,
    clean_query,
    clean_text,
    first_stage_order,
    order_scores,
)
from .ranking_settings import SCORES, ListSettings

#: one query and its passages, in first-stage order: what :meth:`ListwiseReranker.score_lists` takes
QueryPassages = Tuple[str, Sequence[str]]
#: more candidates than this for one query draw a warning: reranking them costs more and rarely helps
MANY_CANDIDATES = 100
_LOAD_LOCK = threading.RLock()  # loads a reranker's model once when threads race to first use


def _setting_attribute(name: str) -> property:
    def read(self):
        return getattr(self.settings, name)

    def write(self, value):
        self.settings = self.settings.replace(**{name: value})

    return property(read, write, doc=f"``settings.{name}``")


class ListwiseReranker(pt.Transformer):
    """The contract of a listwise reranker (see the module docstring). Subclasses set :attr:`settings_class`, call
    :meth:`_init_model` and implement :meth:`_load` and :meth:`score_lists`."""

    #: the settings this kind of reranker takes; each becomes an attribute of the reranker
    settings_class = ListSettings

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        for name in cls.settings_class.names():
            if not isinstance(getattr(cls, name, None), property):
                setattr(cls, name, _setting_attribute(name))

    def _init_model(self, model, tokenizer, settings: ListSettings) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.settings = settings
        self._loaded = None

    # ---- what decides the scores ------------------------------------------------------------------------------
    @property
    def model_name(self) -> str:
        return self.model if isinstance(self.model, str) else type(self.model).__name__

    def scoring_settings(self) -> dict:
        """Everything that decides this reranker's scores, by name: the model and tokenizer as given, and the
        settings whose role is ``scores`` or ``model``. Subclasses add their own (heads, token filter, windows)."""
        return {"model": self.model, "tokenizer": self.tokenizer,
                **self.settings.values(SCORES, "model")}

    # ---- lazy loading -------------------------------------------------------------------------------------------
    def loaded(self):
        """What this reranker scores with (its :meth:`_load`), built on first use, once also when several threads
        ask at the same time."""
        if self._loaded is not None:
            return self._loaded
        with _LOAD_LOCK:
            if self._loaded is None:
                self._loaded = self._load()
        return self._loaded

    def _load(self):
        raise NotImplementedError

    def reset(self) -> None:
        """Drop what was loaded; the next use builds it again (after the heads or the adapter changed)."""
        with _LOAD_LOCK:
            self._loaded = None

    def __getstate__(self) -> dict:
        """Pickled without what was loaded (model weights): a worker of ``.parallel()`` loads it once, lazily. A model
        given as a name travels as that name; a model given as an object travels with it."""
        state = self.__dict__.copy()
        state["_loaded"] = None
        return state

    # ---- scoring ------------------------------------------------------------------------------------------------
    def score_lists(self, lists: Sequence[QueryPassages], desc: Optional[str] = None) -> List[np.ndarray]:
        """Scores of several ``(query, passages)`` lists, passages in first-stage order; higher is better."""
        raise NotImplementedError

    def final_scores(self, lists: Sequence[QueryPassages], first_stage: Sequence[np.ndarray]) -> List[np.ndarray]:
        """The scores the reranker ranks by, given the lists' first-stage scores (one array per list). Here the
        :meth:`score_lists` alone; the attention rerankers fuse and cascade."""
        return self.score_lists(lists)

    def rank(self, query: str, passages: Sequence[str], top_k: Optional[int] = None,
             return_documents: bool = False) -> List[dict]:
        """Rank ``passages`` for ``query`` without PyTerrier: ``[{"corpus_id", "score"(, "text")}]``, best first.

        ``passages`` should be in first-stage order: it decides the windows and the anchors of long lists, and with
        ``fuse`` it is the first-stage ranking that the scores are fused with.
        """
        name = type(self).__name__
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 0):
            raise ValueError(f"{name}.rank: top_k={top_k!r} must be None (every passage) or a whole number >= 0")
        query = clean_query(query, "the query", name)
        texts = [clean_text(p) for p in passages]
        (scores,) = self.final_scores([(query, texts)], [order_scores(len(texts))])  # the order stands in for them
        check_finite_scores([scores], ["the passages"], name)
        order = np.argsort(-scores, kind="stable")[:top_k]
        return [dict(corpus_id=int(i), score=float(scores[i]), **({"text": texts[i]} if return_documents else {}))
                for i in order]

    # ---- PyTerrier ----------------------------------------------------------------------------------------------
    def transform(self, inp: pd.DataFrame) -> pd.DataFrame:
        """Rerank a result frame: validated, grouped by ``qid`` in first-stage order (``rank``, else descending
        ``score``), ranked by :meth:`final_scores`; every input column comes back with new ``score`` and ``rank``.
        Errors and warnings name the reranker's class."""
        name = type(self).__name__
        check_input_frame(inp, self, name)
        out = inp.copy()
        if len(out) == 0:
            out["score"] = pd.Series(dtype="float64")
            out["rank"] = pd.Series(dtype="int64")
            return out
        out = first_stage_order(out)
        lists = candidate_lists(out, self.text_field, name)
        warn_about_lists(lists, name)
        scores = self.final_scores([(c.query, c.texts) for c in lists], [c.first_stage for c in lists])
        check_finite_scores(scores, [f"qid {c.qid!r}" for c in lists], name)
        labels = np.concatenate([c.rows for c in lists])
        out["score"] = pd.Series(np.concatenate(scores).astype("float64"), index=labels)  # aligned on row labels
        out = add_ranks(out)
        return out.sort_values(["qid", "rank"], kind="stable").reset_index(drop=True)

    def transform_inputs(self):
        return [["qid", "query", "docno", self.text_field]]


def warn_about_lists(lists: Sequence[CandidateList], name: str) -> None:
    """Warn about lists that are long enough to cost much for little, and about duplicate docnos."""
    for item in lists:
        if len(item) > MANY_CANDIDATES:
            warnings.warn(f"{name}: qid {item.qid!r} has {len(item)} candidates; reranking more than "
                          f"{MANY_CANDIDATES} costs more windows and rarely helps. Cut the first stage, "
                          f"e.g. `bm25 % 50 >> {name}(...)`.", stacklevel=3)
        if len(set(item.docnos)) < len(item.docnos):
            warnings.warn(f"{name}: qid {item.qid!r} has duplicate docnos; each row is scored on its own.",
                          stacklevel=3)


def check_input_frame(inp: pd.DataFrame, reranker: ListwiseReranker, name: str) -> None:
    """Refuse, before anything is scored, a frame that would fail half-way: missing columns (with a hint where the
    passage text is missing), rows without a qid, and, when the reranker fuses, first-stage scores that are not
    finite numbers (a z-score over an infinite score is NaN for the whole list)."""
    check_is_frame(inp, name)
    check_columns(inp, reranker, name)
    check_numeric_score(inp, name)
    if getattr(reranker, "fuse", None) is not None and "score" in inp.columns:
        check_finite_column(inp, "score", name, f"fuse={reranker.fuse:g} fuses with the first stage's score",
                            "fix the first stage's scores, or use fuse=None")
    check_qids(inp, name)


def check_columns(inp: pd.DataFrame, reranker: ListwiseReranker, name: str) -> None:
    """Every column the reranker reads is there (``pt.validate``); the message says which are missing first, then
    what to do (PyTerrier's own message starts with the whole transformer's repr)."""
    text_field = reranker.text_field
    try:
        pt.validate.result_frame(inp, extra_columns=["query", text_field], context=reranker)
    except pt.validate.InputValidationError as err:
        missing = [c for c in ("qid", "docno", "query", text_field) if c not in inp.columns]
        hint = ""
        if text_field in missing:
            hint = (f" {name} reads passage text from the {text_field!r} column: add it with a text loader before "
                    f"the reranker (`bm25 % 20 >> pt.text.get_text(dataset, 'text') >> {name}(...)`), or name the "
                    f"column that holds the text with {name}(..., text_field='body').")
        raise pt.validate.InputValidationError(
            f"{name}: the input lacks the column(s) {', '.join(map(repr, missing))} (it has "
            f"{', '.join(map(repr, inp.columns)) or 'none'}).{hint}", err.modes) from None


def check_finite_column(inp: pd.DataFrame, column: str, name: str, why: str, remedy: str) -> None:
    """Every value of ``column`` is a finite number; the error names the column, one bad row and the remedy."""
    values = pd.to_numeric(inp[column], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~np.isfinite(values)
    if bad.any():
        row = inp[bad].iloc[0]
        value = row[column]
        shown = str(float(value)) if isinstance(value, (int, float, np.number)) else repr(value)
        example = f"qid {str(row['qid'])!r}, docno {str(row['docno'])!r}: {shown}" if "docno" in inp.columns \
            else shown
        raise ValueError(f"{name}: {why}, but {int(bad.sum())} row(s) have a {column!r} that is not a finite number "
                         f"(e.g. {example}); {remedy}")


def check_finite_scores(scores: Sequence[np.ndarray], lists: Sequence[str], name: str) -> None:
    """The scores a reranker computed are finite: a NaN or infinite score would give meaningless ranks, so it is an
    error naming the list (``lists``: how to name each, e.g. "qid '7'") and what usually causes it, never a result."""
    for label, values in zip(lists, scores):
        values = np.asarray(values, dtype=np.float64)
        if not np.isfinite(values).all():
            raise ValueError(f"{name}: the scores of {label} are not all finite ({int((~np.isfinite(values)).sum())} "
                             f"of {values.size} are NaN or infinite); check the head weights, slot_bias and dtype "
                             f"(float16 can overflow)")
