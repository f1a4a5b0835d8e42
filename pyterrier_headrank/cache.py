"""``HeadRankCache``: a persistent score cache that is correct for listwise rerankers.

A pointwise cache (pyterrier-caching's ``ScorerCache``) keys a score on ``(query, docno)``. A listwise reranker
(HeadRank, ICR, RankGPT) scores a passage against the whole ordered candidate list, so the same ``(query, docno)``
gets a different score in another list, another order, or from another model, head set or adapter. This cache
therefore stores the scores of a whole candidate list under one key that covers everything that can change them:

* the scorer: its class, every constructor setting that can change scores (read from the attribute of the same
  name), the model (a name string as given; for a loaded model its class, config and a sampled fingerprint of its
  weights; its tokenizer), the fitted heads and LoRA adapter weights (``adapter_``), and this package's version;
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

import contextlib
import hashlib
import inspect
import itertools
import json
import math
import pathlib
import sqlite3
import sys
import threading
import time
import warnings
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Sequence

import numpy as np
import pandas as pd
import pyterrier as pt
import torch

from . import __version__
from .frames import add_ranks, first_stage_order
from .heads import HeadSet
from .hub import HeadRankArtifact

#: Bumped when the key or the stored format changes; older entries then simply miss (or the file is refused).
CACHE_FORMAT = 1
#: Constructor settings that never change scores, left out of the key.
NOT_IN_KEY = frozenset({"batch_size", "device", "verbose", "compile"})
#: Values sampled from each weight tensor of a loaded model for its fingerprint.
SAMPLES_PER_TENSOR = 32
#: Tokens sampled from a tokenizer's vocabulary for its fingerprint.
TOKENIZER_SAMPLES = 256
BUSY_TIMEOUT_S = 60.0
#: A column added to the frame handed to the wrapped reranker, to map its output rows back to input rows.
ROW_COLUMN = "__headrank_cache_row__"
QUERY_CHUNK = 500  # keys per SELECT (well under sqlite's limit on bound parameters)


class HeadRankCacheError(RuntimeError):
    """The cache file cannot be used (not a HeadRankCache database, corrupt, locked for too long)."""


# ---- the key ------------------------------------------------------------------------------------------------------
def text_digest(text) -> str:
    """A hash of one passage text; a missing text (None, NaN) hashes differently from every string."""
    if text is None or (isinstance(text, float) and math.isnan(text)):
        return "missing"
    data = ("s:" if isinstance(text, str) else f"{type(text).__name__}:") + str(text)
    return hashlib.blake2b(data.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def candidate_list_key(scorer: str, query: str, docnos: Sequence[str], texts: Sequence,
                       first_stage: Optional[Sequence[float]] = None) -> str:
    """The cache key of one candidate list: SHA-256 of the scorer fingerprint (:func:`scorer_fingerprint`), the
    query text as given, and the ``(docno, hash of passage text)`` pairs in first-stage order; and the first stage's
    scores when the scorer fuses with them (``fuse``).

    Listwise scores depend on every part of this: the scorer, the query, which passages are in the list, their
    texts, and their order (windows, anchors and position bias all follow the first-stage order).
    """
    payload = [CACHE_FORMAT, scorer, str(query), [[str(d), text_digest(t)] for d, t in zip(docnos, texts)]]
    if first_stage is not None:
        payload.append([float(x).hex() for x in first_stage])
    return hashlib.sha256(json.dumps(payload, separators=(",", ":")).encode("ascii")).hexdigest()


def _sha256_json(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode("ascii")).hexdigest()


def weights_fingerprint(model: torch.nn.Module) -> str:
    """A cheap, deterministic fingerprint of a loaded model's weights (not their device).

    Hashes every parameter's and buffer's name, dtype and shape, and :data:`SAMPLES_PER_TENSOR` evenly spaced values
    of each (one small copy to the CPU per tensor). Two different checkpoints, or a model fine-tuned in place, differ
    in nearly every value and so get different fingerprints; an edit that touches only unsampled values does not.
    """
    digest = hashlib.sha256()
    samples = []
    with torch.no_grad():
        for name, tensor in itertools.chain(model.named_parameters(), model.named_buffers()):
            flat = tensor.detach().reshape(-1)
            digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}\n".encode())
            count = min(SAMPLES_PER_TENSOR, flat.numel())
            if count:
                index = torch.arange(count, device=flat.device) * (flat.numel() - 1) // max(count - 1, 1)
                samples.append(flat[index].to(device="cpu", dtype=torch.float64))
    if samples:
        digest.update(torch.cat(samples).numpy().tobytes())
    return digest.hexdigest()


def tensors_digest(tensors: Dict[str, torch.Tensor]) -> str:
    """SHA-256 of every byte of ``tensors`` (with names, dtypes and shapes): for small fitted weights (LoRA)."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensors[name].shape)}\n".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def describe_tokenizer(tokenizer) -> dict:
    """A loaded tokenizer's identity: class, size, special tokens, chat template and a sample of its vocabulary."""
    size = len(tokenizer)
    ids = sorted(set(range(0, size, max(1, size // TOKENIZER_SAMPLES))) | ({size - 1} if size else set()))
    return {"class": _class_name(tokenizer), "size": size,
            "special": _describe(getattr(tokenizer, "special_tokens_map", {}), "tokenizer.special_tokens_map"),
            "chat_template": _sha256_json(str(getattr(tokenizer, "chat_template", None))),
            "padding_side": str(getattr(tokenizer, "padding_side", None)),
            "vocabulary": _sha256_json([str(t) for t in tokenizer.convert_ids_to_tokens(ids)])}


def describe_model(model: torch.nn.Module) -> dict:
    """A loaded model's identity: class, config as JSON (without private and version fields), weight fingerprint."""
    config = model.config.to_dict() if hasattr(getattr(model, "config", None), "to_dict") else {}
    config = {k: v for k, v in config.items() if not k.startswith("_") and k != "transformers_version"}
    return {"class": _class_name(model), "config": _sha256_json(json.loads(json.dumps(config, default=str))),
            "weights": weights_fingerprint(model)}


def describe_adapter(adapter) -> Optional[dict]:
    """A fitted adapter (``reranker.adapter_``): its class, its ``config`` and a hash of its ``state`` tensors."""
    if adapter is None:
        return None
    config = getattr(adapter, "config", None)
    state = getattr(adapter, "state", None)
    return {"class": _class_name(adapter),
            "config": config.to_dict() if hasattr(config, "to_dict") else _describe(config, "adapter_.config"),
            "state": tensors_digest(state) if state else None}


def _class_name(value) -> str:
    return f"{type(value).__module__}.{type(value).__qualname__}"


def _describe(value, where: str):
    """``value`` as JSON data for the key; refuses (TypeError) what it cannot describe faithfully."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (np.generic,)):
        return value.item()
    if isinstance(value, torch.dtype):
        return str(value)
    if isinstance(value, HeadSet):
        return value.to_dict()
    if isinstance(value, torch.nn.Module):
        return describe_model(value)
    if hasattr(value, "convert_ids_to_tokens") and hasattr(value, "__len__"):
        return describe_tokenizer(value)
    if isinstance(value, pt.Transformer):
        return describe_scorer(value)
    if isinstance(value, (list, tuple)):
        return [_describe(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {str(k): _describe(v, f"{where}[{k!r}]") for k, v in value.items()}
    raise TypeError(f"HeadRankCache: cannot put {where} (a {type(value).__name__}) into the cache key; use a reranker "
                    f"whose settings are numbers, strings, dtypes, head sets, models or tokenizers")


def constructor_settings(reranker) -> List[str]:
    """The constructor parameters of every class in ``type(reranker).__mro__``, but :data:`NOT_IN_KEY`.

    The whole class hierarchy is read, so that a subclass taking ``**kwargs`` and passing them on to HeadRank is still
    keyed by HeadRank's settings. A constructor that takes ``*args`` (such as a PyTerrier pipeline's) is refused:
    what those arguments do to scores cannot be read.
    """
    names: List[str] = []
    for cls in type(reranker).__mro__:
        init = cls.__dict__.get("__init__")
        if cls is object or not inspect.isfunction(init):
            continue
        for name, param in inspect.signature(init).parameters.items():
            if param.kind is param.VAR_POSITIONAL:
                raise TypeError(f"HeadRankCache: cannot key {type(reranker).__name__}: its constructor takes *{name}, "
                                f"whose effect on scores cannot be read; wrap the reranker itself (HeadRank, ICR, "
                                f"RankGPT), not a pipeline")
            if param.kind is not param.VAR_KEYWORD and name != "self" and name not in names:
                names.append(name)
    return [name for name in names if name not in NOT_IN_KEY]


def describe_scorer(reranker) -> dict:
    """What a reranker's scores depend on: its class, its constructor settings (:func:`constructor_settings`, read
    from the attribute of the same name, as HeadRank, ICR and RankGPT store them), its fitted adapter
    (``adapter_``) and this package's version. A setting not stored under its name is refused."""
    reranker = _scoring_target(reranker)
    cls = type(reranker).__name__
    settings = {}
    for name in constructor_settings(reranker):
        if not hasattr(reranker, name):
            raise TypeError(f"HeadRankCache: cannot key {cls}: its setting {name!r} is not stored as "
                            f"{cls}.{name}, so the cache cannot tell when it changes")
        settings[name] = _describe(getattr(reranker, name), f"{cls}.{name}")
    return {"format": CACHE_FORMAT, "package": __version__, "class": _class_name(reranker), "settings": settings,
            "adapter": describe_adapter(getattr(reranker, "adapter_", None))}


def scorer_fingerprint(reranker) -> str:
    """SHA-256 of :func:`describe_scorer`: the part of every list key that identifies the scorer."""
    return _sha256_json(describe_scorer(reranker))


def _scoring_target(reranker):
    """The reranker whose settings decide the scores: a :class:`HeadRankArtifact` is keyed by the HeadRank inside."""
    return reranker.reranker() if isinstance(reranker, HeadRankArtifact) else reranker


# ---- the sqlite store ---------------------------------------------------------------------------------------------
SCHEMA = (
    "CREATE TABLE IF NOT EXISTS headrank_cache_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS headrank_cache_entries (key TEXT PRIMARY KEY, scorer TEXT NOT NULL, "
    "docnos TEXT NOT NULL, scores BLOB NOT NULL, checksum TEXT NOT NULL, created REAL NOT NULL)",
)


def entry_checksum(key: str, docnos_json: str, scores: bytes) -> str:
    """SHA-256 over an entry's key, docnos and score bytes: a changed byte anywhere makes the entry fail it."""
    digest = hashlib.sha256(key.encode("ascii"))
    digest.update(b"\0" + docnos_json.encode("utf-8", "surrogatepass") + b"\0")
    digest.update(scores)
    return digest.hexdigest()


class ScoreStore:
    """The sqlite file behind a :class:`HeadRankCache`: one short-lived connection per operation.

    WAL mode lets readers and one writer work at once; the busy timeout makes a second writer wait its turn instead
    of failing. Every sqlite error becomes a :class:`HeadRankCacheError` that names the file.
    """

    def __init__(self, path, busy_timeout_s: float = BUSY_TIMEOUT_S):
        self.path = pathlib.Path(path)
        self.busy_timeout_s = float(busy_timeout_s)
        if str(path) == ":memory:" or self.path.is_dir():
            raise ValueError(f"HeadRankCache: the cache path must be a file, got '{path}'")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.connect() as db:
            self._init_schema(db)

    def _use_wal(self, db: sqlite3.Connection) -> None:
        """Switch to WAL, retrying while another process holds the file: sqlite answers "locked" at once, without its
        busy handler, when two connections change the journal mode of a new file at the same moment."""
        deadline = time.monotonic() + self.busy_timeout_s
        while True:
            try:
                db.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as err:
                text = str(err).lower()
                if ("locked" not in text and "busy" not in text) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    @contextlib.contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        """A connection in autocommit mode (transactions are explicit), closed afterwards; errors name the file."""
        db = None
        try:
            db = sqlite3.connect(str(self.path), timeout=self.busy_timeout_s, isolation_level=None)
            db.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_s * 1000)}")
            self._use_wal(db)
            db.execute("PRAGMA synchronous = NORMAL")
            yield db
        except sqlite3.DatabaseError as err:
            raise self._error(err) from err
        finally:
            if db is not None:
                db.close()

    def _error(self, err: sqlite3.DatabaseError) -> HeadRankCacheError:
        text = str(err)
        if "locked" in text or "busy" in text:
            return HeadRankCacheError(f"HeadRankCache: cache file '{self.path}' stayed locked by another process for "
                                      f"more than {self.busy_timeout_s:g}s ({text})")
        return HeadRankCacheError(f"HeadRankCache: cache file '{self.path}' is corrupt or not an sqlite database "
                                  f"({text}). Delete it (and '{self.path.name}-wal', '{self.path.name}-shm' beside it) "
                                  f"to start a new cache.")

    def _init_schema(self, db: sqlite3.Connection) -> None:
        """Create the tables in an empty file; refuse other sqlite databases and other cache formats."""
        db.execute("BEGIN IMMEDIATE")
        try:
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if tables and "headrank_cache_meta" not in tables:
                raise HeadRankCacheError(f"HeadRankCache: '{self.path}' is an sqlite database of something else "
                                         f"(tables {sorted(tables)[:5]}), not a HeadRankCache; use another path")
            for statement in SCHEMA:
                db.execute(statement)
            db.execute("INSERT OR IGNORE INTO headrank_cache_meta VALUES ('format', ?)", (str(CACHE_FORMAT),))
            (found,) = db.execute("SELECT value FROM headrank_cache_meta WHERE name = 'format'").fetchone()
            if found != str(CACHE_FORMAT):
                raise HeadRankCacheError(f"HeadRankCache: '{self.path}' is a cache of format {found}; this version "
                                         f"writes format {CACHE_FORMAT}. Delete the file to start a new cache.")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def read(self, keys: Sequence[str]) -> Dict[str, tuple]:
        """``key -> (docnos_json, scores_bytes, checksum)`` for the stored keys among ``keys``."""
        found = {}
        with self.connect() as db:
            for start in range(0, len(keys), QUERY_CHUNK):
                chunk = list(keys[start:start + QUERY_CHUNK])
                rows = db.execute(f"SELECT key, docnos, scores, checksum FROM headrank_cache_entries WHERE key IN "
                                  f"({','.join('?' * len(chunk))})", chunk)
                found.update({key: (docnos, bytes(scores), checksum) for key, docnos, scores, checksum in rows})
        return found

    def write(self, rows: Sequence[tuple]) -> None:
        """Store ``(key, scorer, docnos_json, scores_bytes)`` rows (replacing same keys) in one transaction."""
        now = time.time()
        records = [(key, scorer, docnos, blob, entry_checksum(key, docnos, blob), now)
                   for key, scorer, docnos, blob in rows]
        with self.connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany("INSERT OR REPLACE INTO headrank_cache_entries VALUES (?, ?, ?, ?, ?, ?)", records)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def count(self) -> int:
        with self.connect() as db:
            return int(db.execute("SELECT COUNT(*) FROM headrank_cache_entries").fetchone()[0])


# ---- the transformer ----------------------------------------------------------------------------------------------
@dataclass
class CandidateList:
    """One query's candidates in first-stage order: row labels in the ordered frame, docnos, passage texts."""

    qid: object
    query: str
    rows: np.ndarray
    docnos: List[str]
    texts: list
    first_stage: Optional[List[float]] = None  # the first stage's scores, when the scorer fuses with them

    def key(self, scorer: str) -> str:
        return candidate_list_key(scorer, self.query, self.docnos, self.texts, self.first_stage)


def check_frame(inp, text_field: str) -> None:
    """Refuse, naming HeadRankCache, what is not a candidate frame: not a DataFrame, missing columns, rows without
    a qid, a qid with no or several query texts."""
    if not isinstance(inp, pd.DataFrame):
        raise TypeError(f"HeadRankCache: expected a pandas DataFrame of candidates, got {type(inp).__name__}")
    missing = [c for c in ("qid", "query", "docno", text_field) if c not in inp.columns]
    if missing:
        raise ValueError(f"HeadRankCache: the input frame lacks column(s) {missing} (it has {list(inp.columns)}); a "
                         f"listwise reranker needs qid, query, docno and the passage text ({text_field!r}), e.g. "
                         f"`bm25 % 20 >> pt.text.get_text(dataset, 'text') >> HeadRankCache(...)`")
    if ROW_COLUMN in inp.columns:
        raise ValueError(f"HeadRankCache: the input frame has a column named {ROW_COLUMN!r}, which the cache uses")
    if inp["qid"].isna().any():
        raise ValueError(f"HeadRankCache: {int(inp['qid'].isna().sum())} row(s) have no qid (NaN or None)")
    for qid, queries in inp.groupby("qid", sort=False)["query"]:
        values = queries.unique()
        if len(values) != 1:
            raise ValueError(f"HeadRankCache: qid {qid!r} has {len(values)} different query texts")
        if not isinstance(values[0], str) or not values[0].strip():
            raise ValueError(f"HeadRankCache: the query of qid {qid!r} is empty or missing ({values[0]!r})")


def candidate_lists(frame: pd.DataFrame, text_field: str, with_scores: bool = False) -> List[CandidateList]:
    """The candidate lists of a frame already in :func:`first_stage_order`, one per qid (with the first stage's
    scores when ``with_scores``)."""
    return [CandidateList(qid, group["query"].iloc[0], group.index.to_numpy(), [str(d) for d in group["docno"]],
                          list(group[text_field]),
                          pd.to_numeric(group["score"], errors="coerce").tolist() if with_scores else None)
            for qid, group in frame.groupby("qid", sort=False)]


class HeadRankCache(pt.Transformer):
    """Cache the scores of a listwise reranker per candidate list, in an sqlite file shared across processes.

    Args:
        reranker: HeadRank, ICR, RankGPT (or a :class:`HeadRankArtifact`, or another transformer that follows their
            frame contract: input qid, query, docno, text[, score, rank]; output every input column with new score
            and rank, one row per input row, and keeps its settings as attributes named after its constructor's
            parameters).
        path: the sqlite file (created with its folder when missing).
        verbose: print one line per call with its hits and misses.

    A hit returns exactly the float64 scores that the reranker gave when the entry was stored, ranked as the reranker
    ranks them (by score per qid, ties in first-stage order). All misses of one call go to the reranker in one call,
    so it can batch them. ``hits``, ``misses`` and ``rejected`` (entries whose checksum failed, then recomputed) count
    candidate lists; :meth:`stats` reports them with the number of stored entries.
    """

    def __init__(self, reranker, path, verbose: bool = False):
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
        return getattr(_scoring_target(self.reranker), "text_field", "text")

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
        fuses = getattr(_scoring_target(self.reranker), "fuse", None) is not None and "score" in frame.columns
        lists = candidate_lists(frame, self.text_field, with_scores=fuses)
        scorer = scorer_fingerprint(self.reranker)
        keys = [c.key(scorer) for c in lists]
        scores = self._lookup(lists, keys)
        missing = [i for i, key in enumerate(keys) if key not in scores]
        if missing:
            fresh = self._score([lists[i] for i in missing], frame)
            scores.update({keys[i]: s for i, s in zip(missing, fresh)})
            self._save([lists[i] for i in missing], fresh, scorer)
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

    def _save(self, lists: Sequence[CandidateList], scores: Sequence[np.ndarray], scorer: str) -> None:
        """Store fresh scores. If scoring resolved a lazy setting (ICR's ``max_window_tokens=None`` becomes the
        model's context length on first use), the entries are stored under the resolved settings' key as well: both
        describe the same scorer, and later calls see the resolved value."""
        scorers = list(dict.fromkeys([scorer, scorer_fingerprint(self.reranker)]))
        rows = [(c.key(s), s, json.dumps(c.docnos), np.asarray(v, dtype="<f8").tobytes())
                for s in scorers for c, v in zip(lists, scores)]
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
