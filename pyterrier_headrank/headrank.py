"""``HeadRank``: the fitted attention reranker (registered default fits, fitting, saving), on
:class:`~pyterrier_headrank.attention_ranker.AttentionRanker`."""
from __future__ import annotations

import copy
import pathlib
from typing import Optional, Sequence, Union

import pyterrier as pt

from .attention_ranker import AttentionRanker
from .fit_parts import FitParts
from .folder import read_fit, read_fit_once, save
from .heads import TRAINING_FREE_ORDER, HeadLike, HeadSet
from .hub import download, upload
from .ranking_settings import DEFAULT_OVERLAP, RankingSettings
from .registry import advise_fitting, default_fit_path, locate
from .training.fit import fit

HELP_URL = "https://arxiv.org/abs/2604.17237"
#: "use the default": the model's registered fit's value where it has one (:mod:`~pyterrier_headrank.registry`),
#: else the package default. For ``fuse`` and ``slot_bias``, whose ``None`` means "off".
DEFAULT = "default"
#: Passage length (tokens) when neither the caller nor a registered fit sets one.
DEFAULT_PASSAGE_TOKENS = 128


class HeadRank(AttentionRanker, pt.Estimator):
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
            a CPU (padding costs more there than batching saves), and on a GPU as many windows as the free memory
            holds (:mod:`~pyterrier_headrank.batching`; halved and retried on out-of-memory).
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
            window (:data:`~pyterrier_headrank.ranking_settings.ORDERS`): ``"first-stage"`` (the top
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
            the compilation, later ones run faster (docs/design.md); scores agree to about 1e-6. The loaded model
            is compiled in place, so other rerankers that share it run compiled too. For long single-process runs;
            leave it off for short ones and in threads.
        verbose: show a progress bar.
    """


    def __init__(self, model="smollm2-135m", heads: HeadLike = None, *, tokenizer=None, calibrate: bool = True,
                 text_field: str = "text", batch_size: Optional[int] = None, max_passage_tokens: Optional[int] = None,
                 max_query_tokens: int = 64, max_window_tokens: Optional[int] = 4096, max_window_passages: int = 50,
                 n_anchors: int = 3, window_overlap: int = DEFAULT_OVERLAP, rescore_top: Optional[int] = 20,
                 order: Optional[str] = None,
                 device=None, dtype="auto", fuse: Union[float, None, str] = DEFAULT,
                 slot_bias: Union[Sequence[float], None, str] = DEFAULT,
                 compile: bool = False, verbose: bool = False):
        path = default_fit_path(model) if heads is None else None  # the model's registered fit, if any
        fitted = read_fit_once(path) if path is not None else None
        shipped = fitted.settings if fitted is not None else {}
        settings = RankingSettings.pick({
            **locals(), "order": _given(order, None, shipped, "order", TRAINING_FREE_ORDER),
            "max_passage_tokens": _given(max_passage_tokens, None, shipped, "max_passage_tokens",
                                         DEFAULT_PASSAGE_TOKENS),
            "fuse": _given(fuse, DEFAULT, shipped, "fuse", None),
            "slot_bias": _given(slot_bias, DEFAULT, shipped, "slot_bias", None)})
        super().__init__(model, fitted.heads if fitted is not None else HeadSet.coerce(heads), tokenizer=tokenizer,
                         settings=settings)
        self.adapter_ = fitted.adapter if fitted is not None else None
        self.default_fit = None if path is None else str(path)
        #: the fitted settings (``fuse``, ``slot_bias``) that came from the registered fit, not from the caller:
        #: ``fit`` drops them with the rest of that fit
        self.settings_from_default_fit = tuple(
            name for name, value, unset in (("fuse", fuse, DEFAULT), ("slot_bias", slot_bias, DEFAULT))
            if fitted is not None and _is_unset(value, unset) and name in shipped)
        if heads is None and fitted is None:
            advise_fitting(self.model_name, type(self).__name__, named=isinstance(model, str))

    # ---- fitting, saving, loading (see training/fit.py, folder.py and hub.py) -----------------------------------
    def fit(self, train_topics_or_results, train_qrels, valid_topics_or_results=None, valid_qrels=None,
            **fit_settings) -> "HeadRank":
        """Select heads from ``train_qrels`` and align them to relevance (PyTerrier's Estimator signature).

        Takes result frames with text (qid, query, docno, text); inside a pipeline
        (``(bm25 % 20 >> text_loader >> HeadRank()).fit(topics, qrels)``) PyTerrier runs the earlier stages first.
        ``fit_settings`` override ``self.fit_settings`` (a :class:`~pyterrier_headrank.training.settings.FitSettings`;
        its defaults when unset): ``k``, ``lam``, ``align``, ``epochs``, ``lr``, ``rank``, ``beta``, ``gamma``,
        ``eta``, ``seed``...
        Graded and binary qrels both work. Returns ``self``, with the fit applied (:meth:`apply_fit`);
        ``fit_summary_`` says what was done.
        """
        self.apply_fit(fit(self, train_topics_or_results, train_qrels, valid_topics_or_results, valid_qrels,
                           **fit_settings))
        return self

    def apply_fit(self, parts: FitParts) -> None:
        """Take the heads, adapter, fitted settings and records of ``parts`` (what :func:`~.training.fit.fit` returns,
        or a saved folder); what a registered default fit set goes with it."""
        self.heads, self.adapter_ = parts.heads, parts.adapter
        self.head_profile_, self.fit_summary_ = parts.profile, parts.summary
        self.settings = self.settings.replace(**parts.settings)
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
        copied.settings = copied.settings.replace(**{name: None for name in self.settings_from_default_fit})
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
        """A reranker from a saved folder's contents (:func:`~.folder.read_fit`); ``overrides`` replace
        constructor arguments (``model`` too)."""
        model = overrides.pop("model", parts.model)
        if model is None:
            raise ValueError(f"HeadRank: {parts.adapter.source} was fitted on a model given as an object "
                             f"({parts.model_class}); pass it again: HeadRank.from_pretrained(path, model=..., "
                             f"tokenizer=...)")
        reranker = cls(model, heads=parts.heads, **{**parts.settings, **overrides})
        reranker.adapter_, reranker.head_profile_, reranker.fit_summary_ = parts.adapter, parts.profile, parts.summary
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

