"""``AttentionRanker``: the listwise attention ranker that :class:`~pyterrier_headrank.HeadRank` and
:class:`~pyterrier_headrank.baselines.ICR` share, on the :class:`~pyterrier_headrank.listwise.ListwiseReranker`
contract.

A ranker holds its settings and builds its engine (the attention reader over the loaded model, the prompt, the
heads) on first use. For each candidate list it plans prompt windows (:mod:`~pyterrier_headrank.windows`), scores
them in batches, merges the windows' scores, fuses them with the first stage when ``fuse`` is set and ranks a long
list as a cascade (:mod:`~pyterrier_headrank.cascade`). Subclasses decide which heads are read
(:meth:`AttentionRanker._default_heads`), may score windows their own way (:meth:`AttentionRanker.window_scores`)
and may adapt the model (:meth:`AttentionRanker._adapted`); HeadRank adds fitting and saving, ICR its token filter.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import pyterrier as pt
import torch

from . import compat
from .attention import AttentionReader, compile_layers, model_shape
from .batching import plan_batch_size, score_in_batches
from .cascade import pool_on_top, rescore_pool
from .fusion import fuse_scores
from .heads import HeadSet
from .listwise import ListwiseReranker, QueryPassages
from .models import check_model_argument, context_length, loaded
from .prompt import ListwisePrompt, Window
from .ranking_settings import ORDERS, RankingSettings
from .slots import corrected
from .windows import merge_window_scores, plan_windows

DEFAULT_SETTINGS = RankingSettings()


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


class AttentionRanker(ListwiseReranker):
    """Rerank candidate lists by the attention that the query pays to each passage (see the module docstring).

    Not used directly: :class:`~pyterrier_headrank.HeadRank` and :class:`~pyterrier_headrank.baselines.ICR` document
    the arguments. ``heads``: a :class:`HeadSet`, or ``None`` for :meth:`_default_heads` once the model is known.
    ``settings``: the :class:`~pyterrier_headrank.ranking_settings.RankingSettings` (``max_window_tokens=None``: the
    model's context length, read from the model when windows are planned).
    """

    settings_class = RankingSettings

    def __init__(self, model, heads: Optional[HeadSet] = None, *, tokenizer=None,
                 settings: RankingSettings = DEFAULT_SETTINGS):
        name = type(self).__name__
        self._init_model(model, tokenizer, settings.checked(name))
        self.heads = heads
        check_model_argument(name, model, tokenizer, settings.device, settings.dtype)  # fail now, not at first use

    def scoring_settings(self) -> dict:
        return {**super().scoring_settings(), "heads": self.heads}

    # ---- lazy model ---------------------------------------------------------------------------------------------
    def engine(self) -> Engine:
        """What this reranker scores with, built on first use (:meth:`loaded`): the attention reader over the
        loaded (and, when fitted, adapted) model, the prompt and the heads."""
        return self.loaded()

    def _load(self) -> Engine:
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

    def score_lists(self, lists: Sequence[QueryPassages], desc: Optional[str] = None) -> List[np.ndarray]:
        """Attention scores for several (query, passages) lists; passages in first-stage order. Higher is better.
        (What the reranker ranks by is :meth:`final_scores`: these, fused and cascaded.)"""
        return [self._merged(plan, scores, len(passages))
                for (plan, scores), (_, passages) in zip(self.window_plan_scores(lists, desc), lists)]

    def _merged(self, plan, scores, count: int) -> np.ndarray:
        return merge_window_scores(plan, scores, count, self.n_anchors) if count else np.zeros(0)

    def final_scores(self, lists: Sequence[QueryPassages], first_stage: Sequence[np.ndarray],
                     planned=None) -> List[np.ndarray]:
        """The scores the reranker ranks by: :meth:`score_lists`, fused with ``first_stage`` (one array per list)
        when ``fuse`` is set, and for lists that needed several windows, the cascade of ``rescore_top``.
        ``planned``: the lists' :meth:`window_plan_scores`, when already computed (to compare merges, say)."""
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

    def window_plan_scores(self, lists: Sequence[QueryPassages],
                           desc: Optional[str] = None) -> List[Tuple[List[List[int]], List[np.ndarray]]]:
        """Per list, before merging: its window plan (:meth:`windows`) and each window's scores, in plan order,
        slot-corrected and averaged over the prompt orders. :meth:`score_lists` merges them
        (:func:`~pyterrier_headrank.windows.merge_window_scores`)."""
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

    def _adapted(self, model):
        """The model that the engine reads (subclasses with fitted adapters apply them here)."""
        return model
