"""``AttentionRanker``: the listwise attention ranker that :class:`~pyterrier_headrank.HeadRank` and
:class:`~pyterrier_headrank.baselines.ICR` share, and the PyTerrier side of every listwise reranker here.

A ranker holds its settings and builds its engine (the attention reader over the loaded model, the prompt, the
heads) on first use. For each candidate list it plans prompt windows (:mod:`~pyterrier_headrank.windows`), scores
them in batches, merges the windows' scores, fuses them with the first stage when ``fuse`` is set and ranks a long
list as a cascade (:mod:`~pyterrier_headrank.cascade`). Subclasses decide which heads are read
(:meth:`AttentionRanker._default_heads`), may score windows their own way (:meth:`AttentionRanker.window_scores`)
and may adapt the model (:meth:`AttentionRanker._adapted`); HeadRank adds fitting and saving, ICR its token filter.
"""
from __future__ import annotations

import threading
import warnings
from dataclasses import dataclass
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import pandas as pd
import pyterrier as pt
import torch

from . import compat
from .attention import AttentionReader, compile_layers, model_shape
from .batching import plan_batch_size, score_in_batches
from .cascade import pool_on_top, rescore_pool
from .frames import (
    add_ranks,
    check_is_frame,
    check_qids,
    clean_query,
    clean_text,
    first_stage_order,
    first_stage_scores,
    order_scores,
    query_of,
)
from .fusion import check_weight, fuse_scores
from .heads import HeadSet
from .models import check_model_argument, context_length, loaded
from .prompt import ListwisePrompt, Window
from .slots import check_slot_bias, corrected
from .windows import DEFAULT_OVERLAP, merge_window_scores, plan_windows

#: Prompt orders: which way each window's passages run in the prompt (the query always comes last), as prompt
#: directions (``False``: first-stage order, the top candidate first; ``True``: reversed, the top candidate last,
#: next to the query, as ICR places it). ``averaged`` scores both and averages each passage's two scores.
ORDERS = {"first-stage": (False,), "reversed": (True,), "averaged": (False, True)}
MANY_CANDIDATES = 100
_LOAD_LOCK = threading.RLock()  # builds a reranker's engine once when threads race to first use


class Engine(NamedTuple):
    """What a reranker scores with: the attention reader (over the loaded model), the prompt builder and the heads."""

    reader: AttentionReader
    prompt: ListwisePrompt
    heads: HeadSet


@dataclass
class _Job:
    """One window of one candidate list, waiting to be scored."""

    list_index: int
    window_index: int
    window: Window
    reversed: bool = False



def _whole(value, setting: str, owner: str, optional: bool = False) -> Optional[int]:
    """A count setting as an int (``None`` kept where the setting allows it); a NaN, a fraction or a string is
    refused with the setting's name, not with Python's own conversion error."""
    if value is None and optional:
        return None
    try:
        if isinstance(value, bool) or float(value) != int(value):
            raise ValueError
        return int(value)
    except (TypeError, ValueError, OverflowError):
        allowed = "a whole number or None" if optional else "a whole number"
        raise ValueError(f"{owner}: {setting}={value!r} must be {allowed}") from None


class AttentionRanker(pt.Transformer):
    """Rerank candidate lists by the attention that the query pays to each passage (see the module docstring).

    Not used directly: :class:`~pyterrier_headrank.HeadRank` and :class:`~pyterrier_headrank.baselines.ICR` document
    the arguments. ``heads``: a :class:`HeadSet`, or ``None`` for :meth:`_default_heads` once the model is known.
    ``max_window_tokens``: ``None`` for the model's context length (read from the model when windows are planned).
    """

    def __init__(self, model, heads: Optional[HeadSet] = None, *, tokenizer=None, calibrate: bool = True,
                 text_field: str = "text", batch_size: Optional[int] = None, max_passage_tokens: int = 128,
                 max_query_tokens: int = 64, max_window_tokens: Optional[int] = 4096, max_window_passages: int = 50,
                 n_anchors: int = 3, window_overlap: int = DEFAULT_OVERLAP, rescore_top: Optional[int] = 20,
                 order: str = "first-stage", device=None, dtype="auto", fuse: Optional[float] = None,
                 slot_bias: Optional[Sequence[float]] = None, compile: bool = False, verbose: bool = False):
        name = type(self).__name__
        self.model, self.heads, self.tokenizer = model, heads, tokenizer
        self.calibrate = calibrate
        self.text_field = text_field
        self.batch_size = _whole(batch_size, "batch_size", name, optional=True)
        self.max_passage_tokens = _whole(max_passage_tokens, "max_passage_tokens", name)
        self.max_query_tokens = _whole(max_query_tokens, "max_query_tokens", name)
        self.max_window_tokens = _whole(max_window_tokens, "max_window_tokens", name, optional=True)
        self.max_window_passages = _whole(max_window_passages, "max_window_passages", name)
        self.n_anchors = _whole(n_anchors, "n_anchors", name)
        self.window_overlap = _whole(window_overlap, "window_overlap", name)
        self.rescore_top = _whole(rescore_top, "rescore_top", name, optional=True)
        self.order = order
        self.device, self.dtype = device, dtype
        self.fuse = check_weight(fuse, name)
        self.slot_bias = check_slot_bias(slot_bias, name)
        self.compile = bool(compile)
        self.verbose = verbose
        check_model_argument(name, model, tokenizer, device, dtype)  # fail now, not at first use
        self._check_settings(name)
        self._loaded = None

    def _check_settings(self, name: str) -> None:
        if min(1 if self.batch_size is None else self.batch_size, self.max_passage_tokens, self.max_query_tokens) < 1:
            raise ValueError(f"{name}: batch_size, max_passage_tokens and max_query_tokens must be >= 1")
        if self.max_window_tokens is not None and self.max_window_tokens < 1:
            raise ValueError(f"{name}: max_window_tokens must be >= 1 (or None for the model's context length)")
        if self.order not in ORDERS:
            raise ValueError(f"{name}: order={self.order!r} is not one of {', '.join(map(repr, ORDERS))}")
        if min(self.n_anchors, self.window_overlap) < 0 or \
                self.max_window_passages < self.n_anchors + self.window_overlap + 1:
            raise ValueError(f"{name}: need n_anchors >= 0, window_overlap >= 0 and "
                             f"max_window_passages > n_anchors + window_overlap")
        if self.rescore_top is not None and self.rescore_top < 1:
            raise ValueError(f"{name}: rescore_top={self.rescore_top!r} must be None or at least 1")

    # ---- lazy model ---------------------------------------------------------------------------------------------
    @property
    def model_name(self) -> str:
        return self.model if isinstance(self.model, str) else type(self.model).__name__

    def engine(self) -> Engine:
        """What this reranker scores with, built on first use (once, also when several threads ask at the same
        time): the attention reader over the loaded (and, when fitted, adapted) model, the prompt and the heads."""
        if self._loaded is not None:
            return self._loaded
        with _LOAD_LOCK:
            if self._loaded is None:
                self._loaded = self._build()
        return self._loaded

    def reset(self) -> None:
        """Drop the engine; the next use builds it again (after the heads or the adapter changed, as ``fit`` does)."""
        with _LOAD_LOCK:
            self._loaded = None

    def __getstate__(self) -> dict:
        """Pickled without the loaded engine (model weights): a worker of ``.parallel()`` loads it once, lazily.

        A model given as a name travels as that name; a model given as an object travels with it. Fitted heads,
        adapter weights and settings travel as they are.
        """
        state = self.__dict__.copy()
        state["_loaded"] = None
        return state

    def _build(self):
        """Load the model (shared, see :func:`models.loaded`), apply fitted adapters, and check the heads fit."""
        model, tokenizer = loaded(self.model, self.tokenizer, self.device, self.dtype, self.verbose)
        model = self._adapted(model)
        pad = compat.pad_token_id(tokenizer)
        reader = AttentionReader(model, pad_token_id=pad)
        prompt = ListwisePrompt(tokenizer, self.max_passage_tokens, self.max_query_tokens)
        num_layers, num_heads = model_shape(model)
        heads = self.heads or self._default_heads(num_layers, num_heads)
        heads.check_fits(num_layers, num_heads)
        if self.compile:
            compile_layers(model, heads.deepest_layer)
        smallest = prompt.overhead_tokens(prompt.calibration) + self.max_query_tokens + \
            (self.n_anchors + self.window_overlap + 1) * (self.max_passage_tokens + prompt.PER_PASSAGE_TOKENS)
        budget = self._window_budget(model)
        if budget < smallest:
            raise ValueError(f"{type(self).__name__}: max_window_tokens={budget} cannot hold the prompt, "
                             f"{self.n_anchors} anchors, {self.window_overlap} overlapping passages and one passage; "
                             f"use at least {smallest}")
        return Engine(reader, prompt, heads)

    def _window_budget(self, model) -> int:
        """The token budget of one prompt: ``max_window_tokens``, or ``model``'s context length when that is None
        (the whole list in one prompt whenever the context holds it). The setting itself stays as given, so that
        a reranker's settings, and the cache key made from them, do not change on first use."""
        return self.max_window_tokens if self.max_window_tokens is not None else context_length(model)

    def _default_heads(self, num_layers: int, num_heads: int) -> HeadSet:
        """The heads used when none are given (subclasses such as ICR change this)."""
        return HeadSet.training_free(num_layers, num_heads)

    @property
    def head_set(self) -> HeadSet:
        """The heads in use (the zero-shot default once the model is known)."""
        return self.engine().heads

    # ---- scoring ------------------------------------------------------------------------------------------------
    def windows(self, query: str, passages: Sequence[str],
                reverse: bool = False) -> Tuple[List[List[int]], List[Window]]:
        """(plan, windows) for one list of ``passages`` in first-stage order: the candidates of each window (in
        first-stage order), and its prompt, whose passages run in the plan's order, or backwards when ``reverse``
        (passage ``j`` of the prompt is then ``plan[w][-1 - j]``)."""
        engine = self.engine()
        prompt = engine.prompt
        part = prompt.query_part(query)
        texts, counts = prompt.truncate_passages(passages)
        budget = self._window_budget(engine.reader.model) - prompt.overhead_tokens(part)
        plan = plan_windows([c + prompt.PER_PASSAGE_TOKENS for c in counts], budget, self.max_window_passages,
                            self.n_anchors, self.window_overlap)
        return plan, [prompt.window([texts[i] for i in (idx[::-1] if reverse else idx)], part) for idx in plan]

    def score_lists(self, lists: Sequence[Tuple[str, Sequence[str]]], desc: Optional[str] = None) -> List[np.ndarray]:
        """Attention scores for several (query, passages) lists; passages in first-stage order. Higher is better.
        (What the reranker ranks by is :meth:`final_scores`: these, fused and cascaded.)"""
        return [self._merged(plan, scores, len(passages))
                for (plan, scores), (_, passages) in zip(self.window_plan_scores(lists, desc), lists)]

    def _merged(self, plan, scores, count: int) -> np.ndarray:
        return merge_window_scores(plan, scores, count, self.n_anchors) if count else np.zeros(0)

    def final_scores(self, lists: Sequence[Tuple[str, Sequence[str]]], first_stage: Sequence[np.ndarray],
                     planned=None) -> List[np.ndarray]:
        """The scores the reranker ranks by: :meth:`score_lists`, fused with ``first_stage`` (one array per list)
        when ``fuse`` is set, and for lists that needed several windows, the cascade of ``rescore_top``.
        ``planned``: the lists' :meth:`window_plan_scores`, when already computed (the long-list benchmark)."""
        planned = self.window_plan_scores(lists, type(self).__name__) if planned is None else planned
        merged = [self._merged(plan, scores, len(passages)) for (plan, scores), (_, passages) in zip(planned, lists)]
        final = [self._fused(first, m) for first, m in zip(first_stage, merged)]
        long = [i for i, (plan, _) in enumerate(planned) if len(plan) > 1] if self.rescore_top else []
        if long:
            size = min(self.rescore_top, self.max_window_passages)  # one window (when the tokens fit it too)
            pools = [rescore_pool(merged[i], size) for i in long]
            rescored = self.score_lists([(lists[i][0], [lists[i][1][j] for j in pool])
                                         for i, pool in zip(long, pools)], f"{type(self).__name__}, long lists' heads")
            for i, pool, scores in zip(long, pools, rescored):
                final[i] = pool_on_top(final[i], pool, self._fused(first_stage[i][pool], scores))
        return final

    def _fused(self, first_stage: np.ndarray, scores: np.ndarray) -> np.ndarray:
        return scores if self.fuse is None else fuse_scores(first_stage, scores, self.fuse)

    def window_plan_scores(self, lists: Sequence[Tuple[str, Sequence[str]]],
                           desc: Optional[str] = None) -> List[Tuple[List[List[int]], List[np.ndarray]]]:
        """Per list, before merging: its window plan (:meth:`windows`) and each window's scores, in plan order,
        slot-corrected and averaged over the prompt orders. :meth:`score_lists` merges them
        (:func:`~pyterrier_headrank.windows.merge_window_scores`); ``benchmarks/long_lists.py`` compares merges."""
        reader, prompt, heads = self.engine()
        plans, jobs = [], []
        for i, (query, passages) in enumerate(lists):
            if not passages:
                plans.append([])
                continue
            for reverse in ORDERS[self.order]:
                plan, windows = self.windows(query, passages, reverse)
                jobs += [_Job(i, w, window, reverse) for w, window in enumerate(windows)]
            plans.append(plan)
        jobs.sort(key=lambda job: len(job.window))  # similar lengths together: less padding
        weights = torch.tensor(heads.weights)
        size = self.batch_size or self._planned_batch_size(reader, heads, jobs)
        with torch.inference_mode(), pt.tqdm(total=len(jobs), desc=desc or type(self).__name__, unit="window",
                                             disable=not self.verbose) as bar:
            scored = score_in_batches([job.window for job in jobs], size,
                                      lambda windows: self.window_scores(reader, windows, heads, weights),
                                      bar.update, type(self).__name__)
        window_scores: Dict[Tuple[int, int], np.ndarray] = {}
        for i, job in enumerate(jobs):  # in plan order, averaged over the prompt orders
            scores = corrected(scored[i][: job.window.num_passages], self.slot_bias)  # prompt order
            scores = scores[::-1] if job.reversed else scores
            key = (job.list_index, job.window_index)
            window_scores[key] = window_scores.get(key, 0.0) + scores / len(ORDERS[self.order])
        return [(plan, [window_scores[i, w] for w in range(len(plan))]) for i, plan in enumerate(plans)]

    @staticmethod
    def _planned_batch_size(reader: AttentionReader, heads: HeadSet, jobs: Sequence[_Job]) -> int:
        """``batch_size=None``: 1 on CPU; on GPU as many of the longest windows as free memory holds."""
        if not jobs:
            return 1
        longest = max(len(job.window) for job in jobs)
        return plan_batch_size(reader.device, reader.model.config, longest, heads.deepest_layer + 1,
                               next(reader.model.parameters()).dtype)

    def window_scores(self, reader: AttentionReader, windows: Sequence[Window], heads: HeadSet,
                      weights: Optional[torch.Tensor] = None) -> np.ndarray:
        """Scores ``[windows, passages]`` of one batch of windows, passages in each window's prompt order, with the
        head set's weights unless ``weights`` are given (subclasses such as ICR score their own way)."""
        weights = torch.tensor(heads.weights) if weights is None else weights
        readout = reader.read(windows, heads, calibrate=self.calibrate)
        return readout.scores(weights, calibrate=self.calibrate).float().cpu().numpy()

    def rank(self, query: str, passages: Sequence[str], top_k: Optional[int] = None,
             return_documents: bool = False) -> List[dict]:
        """Rank ``passages`` for ``query`` without PyTerrier: ``[{"corpus_id", "score"(, "text")}]``, best first.

        ``passages`` should be in first-stage order (it decides the windows and the anchors of long lists, and with
        ``fuse`` it is the first-stage ranking that the attention scores are fused with).
        """
        query = clean_query(query, "the query", type(self).__name__)
        texts = [clean_text(p) for p in passages]
        (scores,) = self.final_scores([(query, texts)], [order_scores(len(texts))])  # the order stands in for them
        check_finite_scores([scores], ["the passages"], type(self).__name__)
        order = np.argsort(-scores, kind="stable")[:top_k]
        return [dict(corpus_id=int(i), score=float(scores[i]), **({"text": texts[i]} if return_documents else {}))
                for i in order]

    def _adapted(self, model):
        """The model that the engine reads (subclasses with fitted adapters apply them here)."""
        return model

    # ---- PyTerrier ----------------------------------------------------------------------------------------------
    def transform(self, inp: pd.DataFrame) -> pd.DataFrame:
        return rerank_frame(self, inp, self.final_scores)

    def transform_inputs(self):
        return [["qid", "query", "docno", self.text_field]]


def check_input_frame(inp: pd.DataFrame, reranker: pt.Transformer, name: str) -> None:
    """Refuse, before anything is scored, a frame that would fail half-way: missing columns (with a hint where the
    passage text is missing), rows without a qid, and, when the reranker fuses, first-stage scores that are not
    finite numbers (a z-score over an infinite score is NaN for the whole list)."""
    check_is_frame(inp, name)
    check_columns(inp, reranker, name)
    if getattr(reranker, "fuse", None) is not None and "score" in inp.columns:
        check_finite_column(inp, "score", name, f"fuse={reranker.fuse:g} fuses with the first stage's score",
                            "fix the first stage's scores, or use fuse=None")
    check_qids(inp, name)


def check_columns(inp: pd.DataFrame, reranker: pt.Transformer, name: str) -> None:
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


def rerank_frame(reranker: pt.Transformer, inp: pd.DataFrame,
                 scores_of: Callable[[List[Tuple[str, List[str]]], List[np.ndarray]], List[np.ndarray]]) -> pd.DataFrame:
    """The PyTerrier side of a listwise reranker, shared by the attention rankers and RankGPT.

    Validates ``inp``, groups it by ``qid`` in first-stage order (``rank``, else descending ``score``), calls
    ``scores_of([(query, passages), ...], [first-stage scores, ...])`` (an attention ranker's
    :meth:`AttentionRanker.final_scores`) and returns every input column with new ``score`` and ``rank``. Errors
    and warnings name the reranker's class.
    """
    name = type(reranker).__name__
    check_input_frame(inp, reranker, name)
    out = inp.copy()
    if len(out) == 0:
        out["score"] = pd.Series(dtype="float64")
        out["rank"] = pd.Series(dtype="int64")
        return out
    out = first_stage_order(out)
    groups = list(out.groupby("qid", sort=False))
    lists = []
    for qid, group in groups:
        query = query_of(group["query"], qid, name)
        if len(group) > MANY_CANDIDATES:
            warnings.warn(f"{name}: qid {qid!r} has {len(group)} candidates; reranking more than "
                          f"{MANY_CANDIDATES} costs more windows and rarely helps. Cut the first stage, "
                          f"e.g. `bm25 % 50 >> {name}(...)`.", stacklevel=2)
        if group["docno"].duplicated().any():
            warnings.warn(f"{name}: qid {qid!r} has duplicate docnos; each row is scored on its own.",
                          stacklevel=2)
        lists.append((query, [clean_text(t) for t in group[reranker.text_field]]))
    scores = scores_of(lists, [first_stage_scores(group) for _, group in groups])
    check_finite_scores(scores, [f"qid {qid!r}" for qid, _ in groups], name)
    labels = np.concatenate([group.index.to_numpy() for _, group in groups])
    out["score"] = pd.Series(np.concatenate(scores).astype("float64"), index=labels)  # aligned on row labels
    out = add_ranks(out)
    return out.sort_values(["qid", "rank"], kind="stable").reset_index(drop=True)
