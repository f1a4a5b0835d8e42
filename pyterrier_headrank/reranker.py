"""``HeadRank``: the PyTerrier reranker, and a framework-free ``rank(query, passages)`` beside it."""
from __future__ import annotations

import copy
import pathlib
import threading
import warnings
from dataclasses import dataclass
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import pandas as pd
import pyterrier as pt
import torch

from . import compat
from .artifact import FitParts, download, locate, read_fit, read_fit_once, save, upload
from .attention import AttentionReader, compile_layers, model_shape
from .batching import plan_batch_size, score_in_batches
from .cascade import pool_on_top, rescore_pool
from .frames import add_ranks, clean_text, first_stage_order, first_stage_scores, order_scores
from .fusion import check_weight, fuse_scores
from .heads import TRAINING_FREE_ORDER, HeadLike, HeadSet
from .models import check_model_argument, loaded
from .prompt import ListwisePrompt, Window
from .registry import advise_fitting, default_fit_path
from .slots import check_slot_bias, corrected
from .training.fit import fit
from .windows import DEFAULT_OVERLAP, merge_window_scores, plan_windows

HELP_URL = "https://arxiv.org/abs/2604.17237"
#: Prompt orders: which way each window's passages run in the prompt (the query always comes last), as prompt
#: directions (``False``: first-stage order, the top candidate first; ``True``: reversed, the top candidate last,
#: next to the query, as ICR places it). ``averaged`` scores both and averages each passage's two scores.
ORDERS = {"first-stage": (False,), "reversed": (True,), "averaged": (False, True)}
MANY_CANDIDATES = 100
#: "use the default": the model's registered fit's value where it has one (:mod:`~pyterrier_headrank.registry`),
#: else the package default. For ``fuse`` and ``slot_bias``, whose ``None`` means "off".
DEFAULT = "default"
#: Passage length (tokens) when neither the caller nor a registered fit sets one.
DEFAULT_PASSAGE_TOKENS = 128
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


class HeadRank(pt.Estimator):
    """Rerank candidates by the attention that the query pays to each passage in a few heads of a decoder LLM.

    All candidates of a query go into one listwise prompt (passages first, query last); one forward pass, stopped
    after the deepest selected layer, yields every candidate's score. Without ``heads``, the model's registered fit
    is used (:mod:`~pyterrier_headrank.registry`; ``HeadRank("smollm2-135m")`` reads the shipped general-purpose fit,
    fused with the first stage), else the training-free head set (:meth:`HeadSet.training_free`), with a one-time
    warning that fitting helps.

    Args:
        model: an alias (``smollm2-135m``, ``qwen3-0.6b``, ``qwen3-1.7b``, ``qwen3-4b``), a hub id, a folder, a
            ``.gguf`` file, or a loaded ``transformers`` causal LM (then also pass ``tokenizer``).
        heads: a :class:`HeadSet` or a list of ``(layer, head[, weight])``; ``None`` for the model's registered fit
            (its heads, order, fusion weight, slot correction, passage length and adapter, each unless given
            here), or the training-free head set where none is registered; ``"zero-shot"`` for the training-free
            head set explicitly (no fit, no warning).
        calibrate: subtract the attention paid by the content-free query "N/A" (as ICR does).
        text_field: the column holding passage text.
        batch_size: windows per forward pass (windows of different queries are batched together); ``None`` for 1 on
            a CPU, where padded batches measured slower than one window at a time, and on a GPU as many windows as
            the free memory holds (:mod:`~pyterrier_headrank.batching`; halved and retried on out-of-memory).
        max_passage_tokens / max_query_tokens: each passage (query) is cut to this many tokens; a
            ``max_passage_tokens`` of ``None`` takes the registered fit's, else 128.
        max_window_tokens: the token budget of one prompt; longer lists are split into windows (see ``windows``).
        max_window_passages: at most this many passages per window.
        n_anchors: passages shared by all windows of a list, to put their scores on one scale.
        window_overlap: each later window also repeats this many passages of the window before it: more shared
            passages to align the windows on (:mod:`~pyterrier_headrank.windows`), each scored twice.
        rescore_top: a list that needs several windows is ranked as a cascade (:mod:`~pyterrier_headrank.cascade`):
            its merged scores, fused with the first-stage order, pick this many candidates (at most
            ``max_window_passages``), which are scored again in one window and ranked first. ``None``: the merged
            scores alone.
        order: ``None`` for the registered fit's order, else the training-free one
            (:data:`~pyterrier_headrank.heads.TRAINING_FREE_ORDER`); or the order of the passages in each prompt
            window (:data:`ORDERS`): ``"first-stage"`` (the top
            candidate first), ``"reversed"`` (the top candidate last, next to the query) or ``"averaged"`` (both,
            each passage's two scores averaged: two passes per window). Small models weigh prompt slots very
            unequally, so this changes scores; ``fit`` trains in the reranker's order and saves it.
        device: ``None`` for CUDA when present, else CPU. dtype: ``"auto"`` for bf16 on GPU, float32 on CPU.
        fuse: ``"default"``: the registered fit's weight, else ``None``. ``None`` ranks by attention alone; a
            weight ``w`` in [0, 1] ranks by ``w * z(first-stage score) + (1 - w) * z(attention score)``, z-scores
            within each query's list (:mod:`~pyterrier_headrank.fusion`). Without a ``score`` column (and in
            :meth:`rank`) the first-stage order (``rank``, else the rows' order) stands in for it, as
            ``-position``. ``fit(..., fuse=True)`` chooses the weight on validation queries, and saved folders keep it.
        slot_bias: a per-slot correction of position bias (:mod:`~pyterrier_headrank.slots`): the expected score
            of an irrelevant passage in each slot bin, subtracted from every window's scores before they are
            merged. ``None``: no correction; ``"default"``: the registered fit's (else none).
            ``fit(..., slot_correction=True)`` learns it on the training lists, and saved folders keep it.
        compile: compile the decoder layers that the pass runs with ``torch.compile`` (regional compilation,
            dynamic shapes; HeadRank's attention reading stays outside the compiled graphs). The first query pays
            the compilation (about 100 s on a CPU for SmolLM2), later ones run faster (see the README's speed
            section); scores agree to about 1e-6. The loaded model is compiled in place, so other rerankers that
            share it run compiled too. For long single-process runs; leave it off for short ones and in threads.
        verbose: show a progress bar.
    """

    def __init__(self, model="smollm2-135m", heads: HeadLike = None, *, tokenizer=None, calibrate: bool = True,
                 text_field: str = "text", batch_size: Optional[int] = None, max_passage_tokens: Optional[int] = None,
                 max_query_tokens: int = 64, max_window_tokens: int = 4096, max_window_passages: int = 50,
                 n_anchors: int = 3, window_overlap: int = DEFAULT_OVERLAP, rescore_top: Optional[int] = 20,
                 order: Optional[str] = None,
                 device=None, dtype="auto", fuse: Union[float, None, str] = DEFAULT,
                 slot_bias: Union[Sequence[float], None, str] = DEFAULT,
                 compile: bool = False, verbose: bool = False):
        self.model = model
        self.heads = HeadSet.coerce(heads)
        path = default_fit_path(model) if heads is None else None  # the model's registered fit, if any
        fitted = read_fit_once(path) if path is not None else None
        self.default_fit = None if path is None else str(path)
        shipped = fitted.settings if fitted is not None else {}
        if fitted is not None:
            self.heads, self.adapter_ = fitted.heads, fitted.state
        self.tokenizer = tokenizer
        self.calibrate = calibrate
        self.text_field = text_field
        self.batch_size = None if batch_size is None else int(batch_size)
        self.max_passage_tokens = int(_given(max_passage_tokens, None, shipped, "max_passage_tokens",
                                             DEFAULT_PASSAGE_TOKENS))
        self.max_query_tokens = int(max_query_tokens)
        self.max_window_tokens = int(max_window_tokens)
        self.max_window_passages = int(max_window_passages)
        self.n_anchors = int(n_anchors)
        self.window_overlap = int(window_overlap)
        self.rescore_top = None if rescore_top is None else int(rescore_top)
        self.order = _given(order, None, shipped, "order", TRAINING_FREE_ORDER)
        self.device = device
        self.dtype = dtype
        self.fuse = check_weight(_given(fuse, DEFAULT, shipped, "fuse", None), type(self).__name__)
        self.slot_bias = check_slot_bias(_given(slot_bias, DEFAULT, shipped, "slot_bias", None), type(self).__name__)
        #: the fitted settings (``fuse``, ``slot_bias``) that came from the registered fit, not from the caller:
        #: ``fit`` drops them with the rest of that fit
        self.settings_from_default_fit = tuple(
            name for name, value, unset in (("fuse", fuse, DEFAULT), ("slot_bias", slot_bias, DEFAULT))
            if fitted is not None and _is_unset(value, unset) and name in shipped)
        self.compile = bool(compile)
        self.verbose = verbose
        check_model_argument(type(self).__name__, model, tokenizer, device, dtype)  # fail now, not at first use
        if min(1 if self.batch_size is None else self.batch_size, self.max_passage_tokens, self.max_query_tokens) < 1:
            raise ValueError("HeadRank: batch_size, max_passage_tokens and max_query_tokens must be >= 1")
        if self.order not in ORDERS:
            raise ValueError(f"{type(self).__name__}: order={self.order!r} is not one of "
                             f"{', '.join(map(repr, ORDERS))}")
        if min(self.n_anchors, self.window_overlap) < 0 or \
                self.max_window_passages < self.n_anchors + self.window_overlap + 1:
            raise ValueError(f"{type(self).__name__}: need n_anchors >= 0, window_overlap >= 0 and "
                             f"max_window_passages > n_anchors + window_overlap")
        if self.rescore_top is not None and self.rescore_top < 1:
            raise ValueError(f"{type(self).__name__}: rescore_top={rescore_top!r} must be None or at least 1")
        self._loaded = None
        if heads is None and fitted is None and self._advises_fitting:
            advise_fitting(self.model_name, type(self).__name__, named=isinstance(model, str))

    #: whether a model without a registered fit warns that fitting helps (training-free subclasses such as ICR: no)
    _advises_fitting = True

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
        if self.max_window_tokens < smallest:
            raise ValueError(f"HeadRank: max_window_tokens={self.max_window_tokens} cannot hold the prompt, "
                             f"{self.n_anchors} anchors, {self.window_overlap} overlapping passages and one passage; "
                             f"use at least {smallest}")
        return Engine(reader, prompt, heads)

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
        prompt = self.engine().prompt
        part = prompt.query_part(query)
        texts, counts = prompt.truncate_passages(passages)
        budget = self.max_window_tokens - prompt.overhead_tokens(part)
        plan = plan_windows([c + prompt.PER_PASSAGE_TOKENS for c in counts], budget, self.max_window_passages,
                            self.n_anchors, self.window_overlap)
        return plan, [prompt.window([texts[i] for i in (idx[::-1] if reverse else idx)], part) for idx in plan]

    def score_lists(self, lists: Sequence[Tuple[str, Sequence[str]]], desc: str = "HeadRank") -> List[np.ndarray]:
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
                           desc: str = "HeadRank") -> List[Tuple[List[List[int]], List[np.ndarray]]]:
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
        with torch.inference_mode(), pt.tqdm(total=len(jobs), desc=desc, unit="window",
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
        query = _clean_query(query, "the query")
        texts = [clean_text(p) for p in passages]
        (scores,) = self.final_scores([(query, texts)], [order_scores(len(texts))])  # the order stands in for them
        order = np.argsort(-scores, kind="stable")[:top_k]
        return [dict(corpus_id=int(i), score=float(scores[i]), **({"text": texts[i]} if return_documents else {}))
                for i in order]

    # ---- fitting, saving, loading (see fitting.py and artifact.py) ----------------------------------------------
    def fit(self, train_topics_or_results, train_qrels, valid_topics_or_results=None, valid_qrels=None,
            **settings) -> "HeadRank":
        """Select heads from ``train_qrels`` and align them to relevance (PyTerrier's Estimator signature).

        Takes result frames with text (qid, query, docno, text); inside a pipeline
        (``(bm25 % 20 >> text_loader >> HeadRank()).fit(topics, qrels)``) PyTerrier runs the earlier stages first.
        ``settings`` override ``self.fit_settings`` (a :class:`~pyterrier_headrank.training.settings.FitSettings`;
        its defaults when unset): ``k``, ``lam``, ``align``, ``epochs``, ``lr``, ``rank``, ``beta``, ``gamma``,
        ``eta``, ``seed``...
        Graded and binary qrels both work. Returns ``self``, with the fit applied (:meth:`apply_fit`);
        ``fit_summary_`` says what was done.
        """
        self.apply_fit(fit(self, train_topics_or_results, train_qrels, valid_topics_or_results, valid_qrels,
                           **settings))
        return self

    def apply_fit(self, parts: FitParts) -> None:
        """Take the heads, adapter, fitted settings and records of ``parts`` (what :func:`~.training.fit.fit` returns,
        or a saved folder); what a registered default fit set goes with it."""
        self.heads, self.adapter_ = parts.heads, parts.state
        self.head_profile_, self.fit_summary_ = parts.profile, parts.summary
        for name, value in parts.settings.items():
            setattr(self, name, value)
        self.default_fit, self.settings_from_default_fit = None, ()
        self.reset()

    def with_fit(self, parts: FitParts) -> "HeadRank":
        """A copy of this reranker with ``parts`` applied (this one is left as it is)."""
        copied = copy.copy(self)
        copied.apply_fit(parts)
        return copied

    def unfitted(self) -> "HeadRank":
        """A copy without the registered default fit's adapter and fitted settings (the caller's settings and the
        heads stay): where a fresh fit starts."""
        copied = copy.copy(self)
        copied.adapter_ = None
        for name in self.settings_from_default_fit:
            setattr(copied, name, None)
        copied.default_fit, copied.settings_from_default_fit = None, ()
        copied.reset()
        return copied

    def _adapted(self, model):
        """``model`` with this reranker's fitted LoRA adapters applied (a shallow copy), or ``model`` itself."""
        adapter = getattr(self, "adapter_", None)
        return adapter.apply(model) if adapter is not None else model

    def save(self, path) -> str:
        """Write this reranker (settings, heads, adapter weights, training summary) to the folder ``path``."""
        return save(self, path)

    @classmethod
    def from_parts(cls, parts: FitParts, **overrides) -> "HeadRank":
        """A reranker from a saved folder's contents (:func:`~.artifact.read_fit`); ``overrides`` replace
        constructor arguments (``model`` too)."""
        model = overrides.pop("model", parts.model)
        if model is None:
            raise ValueError(f"HeadRank: {parts.state.source} was fitted on a model given as an object "
                             f"({parts.model_class}); pass it again: HeadRank.from_pretrained(path, model=..., "
                             f"tokenizer=...)")
        reranker = cls(model, heads=parts.heads, **{**parts.settings, **overrides})
        reranker.adapter_, reranker.head_profile_, reranker.fit_summary_ = parts.state, parts.profile, parts.summary
        return reranker

    @classmethod
    def from_pretrained(cls, path_or_hub_id, **overrides) -> "HeadRank":
        """Load a reranker saved with :meth:`save` from a folder, a shipped fit's name, or a Hugging Face hub id
        (``org/name``)."""
        folder = locate(path_or_hub_id)
        if folder is None:
            return cls.from_hf(str(path_or_hub_id), **overrides)
        return cls.from_parts(read_fit(folder), **overrides)

    def to_hf(self, repo: str, **kwargs) -> None:
        """Upload this reranker's saved folder to the Hugging Face hub (as a PyTerrier artifact)."""
        upload(self, repo, **kwargs)

    @classmethod
    def from_hf(cls, repo: str, **overrides) -> "HeadRank":
        """Download a reranker uploaded with :meth:`to_hf` (``org/name``, optionally ``@branch``)."""
        return download(repo, **overrides).reranker()

    # ---- PyTerrier ----------------------------------------------------------------------------------------------
    def transform(self, inp: pd.DataFrame) -> pd.DataFrame:
        return rerank_frame(self, inp)

    def transform_inputs(self):
        return [["qid", "query", "docno", self.text_field]]

    def schematic(self, *, input_columns=None):
        return {"label": "HeadRank", "help_url": HELP_URL}

    def __repr__(self) -> str:
        heads = f"{len(self.heads)} heads" if self.heads is not None else "zero-shot heads"
        if self.default_fit is not None:
            heads = f"default fit {pathlib.Path(self.default_fit).name}"
        order = "" if self.order == "first-stage" else f", order={self.order!r}"
        fuse = "" if self.fuse is None else f", fuse={self.fuse:g}"
        return f"HeadRank({self.model_name!r}, {heads}{order}{fuse})"


def _is_unset(value, unset) -> bool:
    return value is unset or (isinstance(value, str) and value == unset)


def _given(value, unset, fitted: dict, name: str, fallback):
    """A constructor argument: the caller's ``value``, else the registered fit's setting, else ``fallback``."""
    return fitted.get(name, fallback) if _is_unset(value, unset) else value


def _clean_query(query, what: str, name: str = "HeadRank") -> str:
    """``what`` names the query in the error, e.g. "the query" or "the query of qid '7'"."""
    text = clean_text(query).strip()
    if not text:
        raise ValueError(f"{name}: {what} is empty; {name} needs query text to rerank")
    return text


def check_input_frame(inp: pd.DataFrame, reranker: pt.Transformer, name: str) -> None:
    """Refuse, before anything is scored, a frame that would fail half-way: missing columns (with a hint where the
    passage text is missing), rows without a qid."""
    if not isinstance(inp, pd.DataFrame):
        raise TypeError(f"{name}: expected a pandas DataFrame of candidates, got {type(inp).__name__}")
    text_field = reranker.text_field
    try:
        pt.validate.result_frame(inp, extra_columns=["query", text_field], context=reranker)
    except pt.validate.InputValidationError as err:
        if text_field in inp.columns:
            raise
        hint = (f" {name} reads passage text from the {text_field!r} column: add it with a text loader before the "
                f"reranker (`bm25 % 20 >> pt.text.get_text(dataset, 'text') >> {name}(...)`), or name the column "
                f"that holds the text with {name}(..., text_field='body').")
        raise pt.validate.InputValidationError(err.args[0] + hint, err.modes) from None
    if getattr(reranker, "fuse", None) is not None and "score" in inp.columns and \
            pd.to_numeric(inp["score"], errors="coerce").isna().any():
        raise ValueError(f"{name}: fuse={reranker.fuse:g} fuses with the first stage's score, but the input has "
                         f"rows without a numeric score; fix the first stage's scores, or use fuse=None")
    if inp["qid"].isna().any():
        rows = inp.index[inp["qid"].isna()].tolist()
        raise ValueError(f"{name}: {len(rows)} row(s) have no qid (NaN or None), e.g. row(s) {rows[:3]}; every "
                         f"candidate needs the qid of its query")


def rerank_frame(reranker: pt.Transformer, inp: pd.DataFrame) -> pd.DataFrame:
    """The PyTerrier side of a listwise reranker, shared by HeadRank and the baselines (ICR, RankGPT).

    Validates ``inp``, groups it by ``qid`` in first-stage order (``rank``, else descending ``score``), calls
    ``reranker.score_lists([(query, passages), ...])`` and returns every input column with new ``score`` and
    ``rank``. Errors and warnings name the reranker's class.
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
        queries = group["query"].unique()
        if len(queries) != 1:
            raise ValueError(f"{name}: qid {qid!r} has {len(queries)} different query texts")
        if len(group) > MANY_CANDIDATES:
            warnings.warn(f"{name}: qid {qid!r} has {len(group)} candidates; reranking more than "
                          f"{MANY_CANDIDATES} costs more windows and rarely helps. Cut the first stage, "
                          f"e.g. `bm25 % 50 >> {name}(...)`.", stacklevel=2)
        if group["docno"].duplicated().any():
            warnings.warn(f"{name}: qid {qid!r} has duplicate docnos; each row is scored on its own.",
                          stacklevel=2)
        lists.append((_clean_query(queries[0], f"the query of qid {qid!r}", name),
                      [clean_text(t) for t in group[reranker.text_field]]))
    if hasattr(reranker, "final_scores"):  # HeadRank and ICR: fusion with the first stage, long-list cascade
        scores = reranker.final_scores(lists, [first_stage_scores(group) for _, group in groups])
    else:
        scores = reranker.score_lists(lists)
    labels = np.concatenate([group.index.to_numpy() for _, group in groups])
    out["score"] = pd.Series(np.concatenate(scores).astype("float64"), index=labels)  # aligned on row labels
    out = add_ranks(out)
    return out.sort_values(["qid", "rank"], kind="stable").reset_index(drop=True)
