"""``HeadRankCache``: a persistent score cache that is correct for listwise rerankers.

A pointwise cache (pyterrier-caching's ``ScorerCache``) keys a score on ``(query, docno)``. A listwise reranker
(HeadRank, ICR, RankGPT) scores a passage against the whole ordered candidate list, so the same ``(query, docno)``
gets a different score in another list, another order, or from another model, head set or adapter. This cache
therefore stores the scores of a whole candidate list under one key that covers everything that can change them:

* the scorer: its class, every setting that can change scores (a listwise reranker's
  :meth:`~pyterrier_headrank.listwise.ListwiseReranker.scoring_settings`), the model (a name string as given; for a
  loaded model its class, config and a sampled fingerprint of its weights; its tokenizer), the fitted heads and LoRA
  adapter weights (``adapter_``), and this package's version;
* the query text, and the candidates in first-stage order (``rank``, else descending ``score``, else as given; the
  order the reranker itself uses), each with a hash of its passage text.

``batch_size``, ``device`` and ``verbose`` do not change scores and are left out of the key (``dtype`` is in it).
Entries live in an sqlite file (standard library; WAL mode and a busy timeout, so several processes may read and
write one file at once). Each entry carries a SHA-256 checksum of its docnos and scores; an entry that fails it is
recomputed, never returned. A file that is not a HeadRankCache database raises :class:`HeadRankCacheError`, naming
the file; delete it (with its ``-wal`` and ``-shm`` companions) to rebuild the cache from scratch.

>>> cached = HeadRankCache(HeadRank("smollm2-135m"), "headrank-cache.sqlite")
>>> pipeline = bm25 % 20 >> text_loader >> cached
"""
from __future__ import annotations

import json
import sys
import threading
import time
import warnings
from typing import Dict, List, Sequence, Union

import numpy as np
import pandas as pd
import pyterrier as pt

from ..candidates import CandidateList, candidate_lists
from ..frames import add_ranks, check_is_frame, check_numeric_score, check_qids, first_stage_order
from ..listwise import ListwiseReranker
from .keys import ROW_COLUMN, candidate_list_key, scorer_fingerprint, scoring_target
from .store import ScoreStore, entry_checksum

NAME = "HeadRankCache"  # how errors name it


def list_key(scorer: str, candidates: CandidateList, fuses: bool) -> str:
    """The key of one candidate list for ``scorer`` (with the first stage's scores when the scorer ``fuses``)."""
    return candidate_list_key(scorer, candidates.query, candidates.docnos, candidates.texts,
                              candidates.first_stage.tolist() if fuses else None)


def reads_first_stage_scores(reranker) -> bool:
    """Whether ``reranker``'s scores may depend on the incoming ``score`` column, so that it belongs in the key: false
    only for a listwise reranker that does not fuse (it reads the candidates' order, which the key has anyway)."""
    target = scoring_target(reranker)
    return not (isinstance(target, ListwiseReranker) and getattr(target, "fuse", None) is None)


def check_frame(inp, text_field: str) -> None:
    """Refuse, naming HeadRankCache, what is not a candidate frame: not a DataFrame, missing columns, rows without
    a qid, a ``score`` column that is not numbers (a qid with no or several query texts is refused when its list is
    read)."""
    check_is_frame(inp, NAME)
    missing = [c for c in ("qid", "query", "docno", text_field) if c not in inp.columns]
    if missing:
        raise ValueError(f"{NAME}: the input frame lacks column(s) {missing} (it has {list(inp.columns)}); a "
                         f"listwise reranker needs qid, query, docno and the passage text ({text_field!r}), e.g. "
                         f"`bm25 % 20 >> pt.text.get_text(dataset, 'text') >> HeadRankCache(...)`")
    if ROW_COLUMN in inp.columns:
        raise ValueError(f"{NAME}: the input frame has a column named {ROW_COLUMN!r}, which the cache uses")
    check_qids(inp, NAME)
    check_numeric_score(inp, NAME)


class HeadRankCache(pt.Transformer):
    """Cache the scores of a listwise reranker per candidate list, in an sqlite file shared across processes.

    Args:
        reranker: a :class:`~pyterrier_headrank.listwise.ListwiseReranker` (HeadRank, ICR, RankGPT), or a
            :class:`~pyterrier_headrank.artifact.HeadRankArtifact`, or another transformer that follows their frame
            contract (input qid, query, docno, text[, score, rank]; output every input column with new score and
            rank, one row per input row) and keeps its settings as attributes named after its constructor's
            parameters.
        path: the sqlite file (created with its folder when missing).
        verbose: print one line per call with its hits and misses.

    A hit returns exactly the float64 scores that the reranker gave when the entry was stored, ranked as the reranker
    ranks them (by score per qid, ties in first-stage order). All misses of one call go to the reranker in one call,
    so it can batch them. ``hits``, ``misses`` and ``rejected`` (entries whose checksum failed, then recomputed) count
    candidate lists; :meth:`stats` reports them with the number of stored entries.
    """

    def __init__(self, reranker: Union[ListwiseReranker, pt.Transformer], path, verbose: bool = False):
        if not callable(getattr(reranker, "transform", None)):
            raise TypeError(f"HeadRankCache: expects a reranker with a transform method (HeadRank, ICR, RankGPT), "
                            f"got {type(reranker).__name__}")
        self.reranker = reranker
        self.path = str(path)
        self.verbose = verbose
        self.store = ScoreStore(path)
        self.hits = self.misses = self.rejected = 0
        self._lock = threading.Lock()

    def __getstate__(self):
        state = dict(self.__dict__)
        state.pop("_lock", None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()

    @property
    def text_field(self) -> str:
        return getattr(scoring_target(self.reranker), "text_field", "text")

    def transform(self, inp: pd.DataFrame) -> pd.DataFrame:
        """Scores from the cache where present, from one call of the wrapped reranker for the rest."""
        started = time.perf_counter()
        check_frame(inp, self.text_field)
        if len(inp) == 0:
            out = inp.copy()
            out["score"] = pd.Series(dtype="float64")
            out["rank"] = pd.Series(dtype="int64")
            return out
        frame = first_stage_order(inp)
        fuses = "score" in frame.columns and reads_first_stage_scores(self.reranker)
        lists = candidate_lists(frame, self.text_field, NAME)
        scorer = scorer_fingerprint(self.reranker)
        keys = [list_key(scorer, c, fuses) for c in lists]
        scores = self._lookup(lists, keys)
        missing = [i for i, key in enumerate(keys) if key not in scores]
        if missing:
            fresh = self._score([lists[i] for i in missing], frame)
            scores.update({keys[i]: s for i, s in zip(missing, fresh)})
            self._save([lists[i] for i in missing], [keys[i] for i in missing], fresh, scorer)
        with self._lock:
            self.hits += len(lists) - len(missing)
            self.misses += len(missing)
        if self.verbose:
            print(f"HeadRankCache: {len(lists)} lists, {len(lists) - len(missing)} hits, {len(missing)} misses in "
                  f"{time.perf_counter() - started:.2f}s ('{self.path}')", file=sys.stderr)
        labels = np.concatenate([c.rows for c in lists])
        frame["score"] = pd.Series(np.concatenate([scores[k] for k in keys]), index=labels)
        return add_ranks(frame).sort_values(["qid", "rank"], kind="stable").reset_index(drop=True)

    def _lookup(self, lists: Sequence[CandidateList], keys: Sequence[str]) -> Dict[str, np.ndarray]:
        """Verified stored scores by key; an entry that fails its checksum or its docnos is left out (recomputed)."""
        found = {}
        stored = self.store.read(list(dict.fromkeys(keys)))
        for candidates, key in zip(lists, keys):
            if key not in stored or key in found:
                continue
            docnos_json, blob, checksum = stored[key]
            valid = checksum == entry_checksum(key, docnos_json, blob) and len(blob) == 8 * len(candidates.docnos)
            if valid and json.loads(docnos_json) == candidates.docnos:
                found[key] = np.frombuffer(blob, dtype="<f8").astype(np.float64)
                continue
            with self._lock:
                self.rejected += 1
            warnings.warn(f"HeadRankCache: the entry for qid {candidates.qid!r} in '{self.path}' fails its checksum "
                          f"(the file was changed or damaged); recomputing it", stacklevel=3)
        return found

    def _score(self, lists: Sequence[CandidateList], frame: pd.DataFrame) -> List[np.ndarray]:
        """Scores of ``lists`` from ONE call of the wrapped reranker, in each list's first-stage order."""
        rows = np.concatenate([c.rows for c in lists])
        subset = frame.loc[rows].assign(**{ROW_COLUMN: rows})
        out = self.reranker.transform(subset)
        name = type(self.reranker).__name__
        if not isinstance(out, pd.DataFrame) or ROW_COLUMN not in out.columns or "score" not in out.columns:
            raise ValueError(f"HeadRankCache: {name} did not return the input columns with a score column; wrap a "
                             f"reranker that keeps every input column (HeadRank, ICR, RankGPT)")
        by_row = pd.Series(out["score"].to_numpy(dtype="float64"), index=out[ROW_COLUMN].to_numpy())
        if len(out) != len(rows) or by_row.index.has_duplicates or not by_row.index.isin(rows).all():
            raise ValueError(f"HeadRankCache: {name} returned {len(out)} rows for {len(rows)} candidates; the cache "
                             f"needs a score for every candidate (put rank cutoffs after it: HeadRankCache(...) % 10)")
        return [by_row.loc[c.rows].to_numpy(dtype="float64") for c in lists]

    def _save(self, lists: Sequence[CandidateList], keys: Sequence[str], scores: Sequence[np.ndarray],
              scorer: str) -> None:
        """Store fresh scores under their lists' keys."""
        rows = [(key, scorer, json.dumps(c.docnos), np.asarray(v, dtype="<f8").tobytes())
                for c, key, v in zip(lists, keys, scores)]
        self.store.write(rows)

    def stats(self) -> dict:
        """Hits, misses and rejected entries (candidate lists) of this object, the hit rate, and stored entries."""
        with self._lock:
            hits, misses, rejected = self.hits, self.misses, self.rejected
        total = hits + misses
        return {"hits": hits, "misses": misses, "rejected": rejected, "hit_rate": hits / total if total else 0.0,
                "entries": self.store.count(), "path": self.path}

    def transform_inputs(self):
        return [["qid", "query", "docno", self.text_field]]

    def schematic(self, *, input_columns=None):
        return {"label": "HeadRankCache"}

    def __repr__(self) -> str:
        return f"HeadRankCache({self.reranker!r}, {self.path!r})"
