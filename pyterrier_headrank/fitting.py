"""``HeadRank.fit``: select heads from qrels, then align them to relevance; and fusion with the first stage.

The steps, on the training candidate lists (each query's candidates in first-stage order, first prompt window only):

1. **Selection** (``select=True``): one truncated pass per list reads every head of layers ``0..max_layer``; heads
   are ranked by nDCG@10 minus ``lam`` x normalised entropy (:mod:`~pyterrier_headrank.selection`); the top ``k`` form
   the head set. Training-free: with ``align=False`` this is all that fit does.
2. **Alignment** (``align=True``): the head weights (``learn_weights``) and LoRA adapters on q/k of the
   ``adapt_layers`` deepest layers holding selected heads, trained on cached hidden states of the frozen layers below
   (:mod:`~pyterrier_headrank.alignment`). The number of
   epochs is chosen on the validation lists when given (early stopping, best epoch kept, epoch 0 = no alignment
   included), else by cross-fitting over ``cv_folds`` folds of the training lists (out-of-fold nDCG@10 per epoch),
   else fixed. Small training sets overfit fast, so epochs are never chosen on the training lists themselves.

Settings come from :class:`FitSettings` (``reranker.fit_settings``, for pipelines whose ``fit`` passes only the data)
overridden by keyword arguments of ``fit``. Fits are repeatable for a given ``seed``.
"""
from __future__ import annotations

import dataclasses
import datetime
import time
import warnings
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd
import pyterrier as pt
import torch

from .alignment import (
    Adapter,
    AdapterConfig,
    AlignSettings,
    AttentionReplay,
    adapted_layers,
    attach_lora,
    has_pairs,
    lora_state,
    prepare,
    train_adapters,
)
from .frames import clean_text, first_stage_order, first_stage_scores
from .fusion import best_weight
from .metrics import ndcg10
from .selection import profile_heads
from .slots import learn_slot_bias

# ----------------------------------------------------------------------------------------------------------------
# settings
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class FitSettings:
    """Settings of :meth:`HeadRank.fit` and their defaults.

    Selection: ``select`` (choose heads; False keeps the reranker's heads), ``k`` heads, ``lam`` (entropy penalty),
    ``max_layer`` (deepest layer considered; None = two thirds of the depth), ``select_queries`` (profile at most
    this many training lists, drawn with ``seed``; None = all).
    Alignment: ``align``, ``learn_weights`` (also train the head weights), ``adapt_layers`` (LoRA on the this-many
    deepest layers holding selected heads; 0 = all of them; each more layer makes a training step cost about one more
    layer), ``rank``, ``alpha``, ``targets``,
    ``epochs`` (at most), ``lr``, ``weight_decay``, ``beta`` (pairwise temperature), ``gamma`` (entropy weight of
    Omega), ``eta`` (middle-zone variance weight of Omega), ``reference`` (DPO-style margin relative to the starting
    model), ``max_pairs`` and ``hard_negatives`` (pair sampler), ``patience`` (early stopping, epochs),
    ``cv_folds`` (cross-fitting folds when no validation data is given; 0 or 1 = train ``epochs`` epochs).
    Position bias: ``slot_correction`` (learn the per-slot correction, :mod:`~pyterrier_headrank.slots`, on the
    training lists and set it on the reranker; False leaves ``reranker.slot_bias`` as it is).
    Fusion: ``fuse`` (choose the weight of the first stage's score, :mod:`~pyterrier_headrank.fusion`, on the
    validation queries, which it then needs, and set it on the reranker; False leaves ``reranker.fuse`` as it is).
    """

    select: bool = True
    k: int = 8
    lam: float = 0.1
    max_layer: Optional[int] = None
    select_queries: Optional[int] = None
    align: bool = True
    learn_weights: bool = True
    adapt_layers: int = 1
    rank: int = 8
    alpha: float = 16.0
    targets: Tuple[str, ...] = ("q_proj", "k_proj")
    # the alignment knobs default to AlignSettings', so that the two cannot drift apart
    epochs: int = AlignSettings.epochs
    lr: float = AlignSettings.lr
    weight_decay: float = AlignSettings.weight_decay
    beta: float = AlignSettings.beta
    gamma: float = AlignSettings.gamma
    eta: float = AlignSettings.eta
    reference: bool = AlignSettings.reference
    max_pairs: int = AlignSettings.max_pairs
    hard_negatives: int = AlignSettings.hard_negatives
    patience: int = AlignSettings.patience
    cv_folds: int = 3
    slot_correction: bool = False
    fuse: bool = False
    seed: int = AlignSettings.seed
    verbose: bool = True

    def replace(self, **overrides) -> "FitSettings":
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise TypeError(f"HeadRank.fit: unknown setting(s) {unknown}; known: {sorted(names)}")
        return dataclasses.replace(self, **overrides)

    def align_settings(self) -> AlignSettings:
        return AlignSettings(epochs=self.epochs, lr=self.lr, weight_decay=self.weight_decay, beta=self.beta,
                             gamma=self.gamma, eta=self.eta, reference=self.reference, max_pairs=self.max_pairs,
                             hard_negatives=self.hard_negatives, patience=self.patience, seed=self.seed)

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["targets"] = list(self.targets)
        return data


# ----------------------------------------------------------------------------------------------------------------
# candidate lists from PyTerrier frames
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class CandidateList:
    """One query's candidates in first-stage order, with their grades (0 for unjudged)."""

    qid: str
    query: str
    docnos: List[str]
    texts: List[str]
    labels: np.ndarray
    first_stage: np.ndarray


NEEDS_CANDIDATES = ("HeadRank.fit needs candidate lists (columns qid, query, docno and the text column), not just "
                    "topics: fit it inside a pipeline, e.g. `(bm25 % 20 >> text_loader >> HeadRank(...)).fit(topics, "
                    "qrels)` (PyTerrier runs the first stages), or pass the first stage's results with text.")


def check_qrels(qrels: pd.DataFrame, what: str = "qrels") -> pd.DataFrame:
    if qrels is None or not {"qid", "docno", "label"} <= set(qrels.columns):
        raise ValueError(f"HeadRank.fit: {what} need the columns qid, docno, label (PyTerrier's qrels format)")
    out = qrels[["qid", "docno", "label"]].copy()
    out["qid"], out["docno"] = out["qid"].astype(str), out["docno"].astype(str)
    return out


def candidate_lists(results: pd.DataFrame, qrels: pd.DataFrame, text_field: str = "text") -> List[CandidateList]:
    """Group a result frame into :class:`CandidateList` objects (first-stage order: rank, else score, else as given)."""
    if results is None or not isinstance(results, pd.DataFrame):
        raise ValueError(NEEDS_CANDIDATES)
    missing = {"qid", "query", "docno", text_field} - set(results.columns)
    if missing:
        raise ValueError(f"{NEEDS_CANDIDATES} (missing columns: {sorted(missing)})")
    qrels = check_qrels(qrels)
    grades = {(q, d): float(l) for q, d, l in qrels.itertuples(index=False)}
    frame = first_stage_order(results.astype({"qid": str}))
    lists = []
    for qid, group in frame.groupby("qid", sort=False):
        docnos = group["docno"].astype(str).tolist()
        texts = [clean_text(t) for t in group[text_field]]
        scores = first_stage_scores(group)
        lists.append(CandidateList(qid, str(group["query"].iloc[0]), docnos, texts,
                                   np.array([max(0.0, grades.get((qid, d), 0.0)) for d in docnos]), scores))
    if not lists:
        raise ValueError("HeadRank.fit: the training frame has no candidates")
    return lists


# ----------------------------------------------------------------------------------------------------------------
# fit
# ----------------------------------------------------------------------------------------------------------------


def _windows(reranker, lists: Sequence[CandidateList]):
    """The first prompt window of each list, in the reranker's prompt order, and the candidates it holds (in the
    order of the window's passages)."""
    windows, kept, cut = [], [], 0
    reverse = reranker.order == "reversed"
    for item in lists:
        plan, wins = reranker.windows(item.query, item.texts, reverse)
        windows.append(wins[0])
        kept.append(list(plan[0])[::-1] if reverse else list(plan[0]))
        cut += len(plan) > 1
    if cut:
        warnings.warn(f"HeadRank.fit: {cut} list(s) do not fit one prompt window; fit uses the candidates of the "
                      f"first window only (cut the first stage, e.g. `bm25 % 20`, or raise max_window_tokens)",
                      stacklevel=3)
    return windows, kept


def fit(reranker, train, train_qrels, valid=None, valid_qrels=None, **overrides):
    """Fit ``reranker`` (a :class:`HeadRank`) in place and return it; see the module docstring."""
    settings = _checked_settings(reranker, overrides, valid is not None)
    started = time.time()
    # a fresh fit starts from the base model with the reranker's own heads (or the zero-shot default); what a
    # registered default fit set (its adapter, fusion weight, slot correction) goes, the caller's settings stay
    reranker.adapter_ = None
    for name in reranker.settings_from_default_fit:
        setattr(reranker, name, None)
    reranker.default_fit, reranker.settings_from_default_fit = None, ()
    reranker.reset()
    reader, _, start_heads = reranker.engine()
    train_lists = candidate_lists(train, train_qrels, reranker.text_field)
    train_qrels = check_qrels(train_qrels)
    has_valid = valid is not None
    if has_valid:
        if valid_qrels is None:
            raise ValueError("HeadRank.fit: validation results need validation qrels")
        valid_lists = candidate_lists(valid, valid_qrels, reranker.text_field)
        valid_qrels = check_qrels(valid_qrels, "validation qrels")
    else:
        valid_lists = []
    train_windows, train_kept = _windows(reranker, train_lists)
    valid_windows, valid_kept = _windows(reranker, valid_lists)
    summary = {
        "model": reranker.model_name,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "settings": settings.to_dict(),
        "train": _describe(train_lists, train_kept),
        "valid": _describe(valid_lists, valid_kept) if has_valid else None,
    }
    heads, profile = start_heads, None
    if settings.select:
        heads, profile, summary["selection"] = _select(reader, settings, train_lists, train_windows, train_kept,
                                                       reranker.calibrate)
    reranker.heads = heads
    if settings.align:
        summary["alignment"] = _align(reranker, reader, heads, settings, train_lists, train_windows, train_kept,
                                      train_qrels, valid_lists, valid_windows, valid_kept, valid_qrels)
    reranker.reset()  # from here on the engine holds the chosen heads and the fitted adapter
    if has_valid and not settings.align:
        summary["valid_ndcg10"] = _validation_ndcg(reranker, valid_lists, valid_kept, valid_qrels)
    if settings.slot_correction:
        reranker.slot_bias = None  # learned on uncorrected scores
        reranker.slot_bias = summary["slot_bias"] = _slot_bias(reranker, train_lists, train_kept)
    if settings.fuse:
        reranker.fuse, summary["fusion"] = _fusion_weight(reranker, valid_lists, valid_kept, valid_qrels)
    summary["seconds"] = round(time.time() - started, 1)
    reranker.head_profile_ = profile
    reranker.fit_summary_ = summary
    return reranker


def _checked_settings(reranker, overrides: dict, has_validation: bool) -> "FitSettings":
    """The reranker's fit settings with ``overrides``, refused early where they cannot work."""
    base = getattr(reranker, "fit_settings", None) or FitSettings()
    settings = base.replace(**overrides)
    if settings.k < 1:
        raise ValueError("HeadRank.fit: k must be >= 1")
    if settings.fuse and not has_validation:
        raise ValueError("HeadRank.fit: fuse=True chooses the fusion weight on validation queries; pass them "
                         "(fit(train, train_qrels, valid_results, valid_qrels)) or set the weight yourself "
                         "(HeadRank(..., fuse=0.5))")
    if reranker.order not in ("first-stage", "reversed"):
        raise ValueError(f"HeadRank.fit: fit trains in one prompt order, 'first-stage' or 'reversed', not "
                         f"{reranker.order!r}; fit in one of them, then score with order={reranker.order!r} "
                         f"(reranker.order = {reranker.order!r})")
    return settings


def _select(reader, settings: "FitSettings", lists, windows, kept, calibrate: bool):
    """(heads, profile, summary) of entropy-regularised selection over (a seeded sample of) the training lists."""
    chosen = list(range(len(lists)))
    if settings.select_queries is not None and settings.select_queries < len(chosen):
        chosen = sorted(np.random.default_rng(settings.seed).choice(len(chosen), settings.select_queries,
                                                                     replace=False).tolist())
    t0 = time.time()
    profile = profile_heads(reader, [windows[i] for i in chosen], [lists[i].labels[kept[i]] for i in chosen],
                            [lists[i].qid for i in chosen], settings.max_layer, calibrate, verbose=settings.verbose)
    heads = profile.select(settings.k, settings.lam)
    summary = {"queries": len(chosen), "k": settings.k, "lambda": settings.lam, "max_layer": profile.max_layer,
               "heads": heads.to_dict(), "head_ndcg10": [round(float(profile.ndcg[l, h]), 4) for l, h in heads.heads],
               "seconds": round(time.time() - t0, 1)}
    return heads, profile, summary


def _scored(reranker, lists, kept, desc: str):
    """The candidates each first window held, in first-stage order (what ``score_lists`` takes, whatever the prompt
    order), and the reranker's scores of them through its normal pass."""
    in_order = [sorted(k) for k in kept]
    scores = reranker.score_lists([(v.query, [v.texts[j] for j in k]) for v, k in zip(lists, in_order)], desc=desc)
    return in_order, scores


def _fusion_weight(reranker, lists, kept, qrels) -> Tuple[float, dict]:
    """The fusion weight with the best validation nDCG@10 (ties: more attention), and what was measured."""
    in_order, scores = _scored(reranker, lists, kept, "HeadRank fusion weight")
    weight, table = best_weight([(v.qid, [v.docnos[j] for j in k], v.first_stage[k], s)
                                 for v, k, s in zip(lists, in_order, scores)], lambda runs: ndcg10(runs, qrels))
    return weight, {"weight": weight, "valid_ndcg10_by_weight": dict(zip(table["weight"], table["ndcg10"].round(4)))}


def _slot_bias(reranker, lists, kept) -> tuple:
    """The per-slot correction learned from the training lists only, on the fitted reranker's own scores."""
    in_order, scores = _scored(reranker, lists, kept, "HeadRank slot correction")
    reverse = reranker.order == "reversed"
    in_prompt = [(s[::-1], v.labels[k][::-1]) if reverse else (s, v.labels[k])
                 for v, k, s in zip(lists, in_order, scores)]
    return learn_slot_bias([s for s, _ in in_prompt], [labels for _, labels in in_prompt])


def _validation_ndcg(reranker, lists, kept, qrels) -> float:
    """nDCG@10 of the reranker's normal pass on the validation lists (the candidates each window held)."""
    in_order, scores = _scored(reranker, lists, kept, "HeadRank validation")
    return ndcg10({v.qid: ([v.docnos[j] for j in k], s) for v, k, s in zip(lists, in_order, scores)}, qrels)


def _describe(lists: Sequence[CandidateList], kept) -> dict:
    sizes = [len(k) for k in kept]
    levels = sorted({float(g) for item in lists for g in item.labels})
    return {"queries": len(lists), "with_relevant": int(sum(item.labels.max() > 0 for item in lists)),
            "candidates_mean": round(float(np.mean(sizes)), 2) if sizes else 0, "grades_seen": levels}


def _align(reranker, reader, heads, settings: FitSettings, train_lists, train_windows, train_kept, train_qrels,
           valid_lists, valid_windows, valid_kept, valid_qrels) -> dict:
    config = AdapterConfig(adapted_layers(heads, settings.adapt_layers), settings.rank, settings.alpha,
                           tuple(settings.targets))
    adapted = attach_lora(reader.model, config, settings.seed)
    replay = AttentionReplay(adapted, heads, min(config.layers), reranker.calibrate, reader.pad_token_id,
                             settings.learn_weights)
    t0 = time.time()

    def capture(lists, windows, kept, desc):
        items = []
        for item, window, idx in pt.tqdm(list(zip(lists, windows, kept)), desc=desc, unit="list",
                                         disable=not settings.verbose):
            items.append(replay.capture(window, item.qid, [item.docnos[j] for j in idx], item.labels[idx]))
        prepare(replay, items)
        return items

    train_items = capture(train_lists, train_windows, train_kept, "HeadRank caching (train)")
    valid_items = capture(valid_lists, valid_windows, valid_kept, "HeadRank caching (valid)") if valid_lists else []
    cache_seconds = time.time() - t0
    initial = replay.state()
    align = settings.align_settings()

    def evaluator(items, qrels):
        def evaluate(rep):
            with torch.no_grad():
                return ndcg10({it.qid: (it.docnos, rep.scores(it).cpu().numpy()) for it in items}, qrels)
        return evaluate

    info = {"adapter": config.to_dict(), "replayed_layers": [replay.first, replay.deepest],
            "train_lists_with_pairs": int(sum(has_pairs(i) for i in train_items)),
            "cache_seconds": round(cache_seconds, 1)}
    if valid_items:
        result = train_adapters(replay, train_items, align, evaluator(valid_items, valid_qrels),
                                verbose=settings.verbose)
        info["chosen_by"] = "validation (early stopping)"
    elif settings.cv_folds and settings.cv_folds > 1:
        epochs, curves = _cross_fit(replay, train_items, train_qrels, align, settings, initial, evaluator)
        replay.load_state(initial)
        info["chosen_by"] = f"{settings.cv_folds}-fold cross-fitting"
        info["cv_mean_ndcg10_by_epoch"] = [round(v, 4) for v in curves]
        result = train_adapters(replay, train_items, dataclasses.replace(align, epochs=epochs), None,
                                verbose=settings.verbose) if epochs > 0 else None
        if result is None:  # cross-fitting preferred no alignment: keep the starting (identity) adapters
            from .alignment import AlignResult
            result = AlignResult(history=[{"epoch": 0, "loss": None, "valid": None}])
    else:
        result = train_adapters(replay, train_items, align, None, verbose=settings.verbose)
        info["chosen_by"] = "fixed epochs"
    info.update({"history": result.history, "best_epoch": result.best_epoch, "steps": result.steps,
                 "train_seconds": round(result.seconds, 1)})
    if valid_items:
        info["valid_ndcg10_before"] = result.history[0]["valid"]
        info["valid_ndcg10_after"] = max(r["valid"] for r in result.history)
    reranker.adapter_ = Adapter(config, lora_state(adapted), adapted, reader.model)
    reranker.heads = replay.head_set()
    info["head_weights"] = [round(w, 4) for w in reranker.heads.weights]
    return info


def _cross_fit(replay, items, qrels, align: AlignSettings, settings: FitSettings, initial, evaluator):
    """Choose the number of epochs by k-fold cross-fitting: mean out-of-fold nDCG@10 after each epoch."""
    usable = [i for i in items if has_pairs(i)]
    folds = min(settings.cv_folds, len(usable))
    if folds < 2:
        return align.epochs, []
    order = np.random.default_rng(settings.seed).permutation(len(usable))
    curves = []
    for f in range(folds):
        held = [usable[i] for i in order[f::folds]]
        rest = [usable[i] for j, i in enumerate(order) if j % folds != f]
        replay.load_state(initial)
        run = dataclasses.replace(align, patience=align.epochs + 1, seed=align.seed + f + 1)
        result = train_adapters(replay, rest, run, evaluator(held, qrels), verbose=settings.verbose,
                                desc=f"HeadRank cross-fitting {f + 1}/{folds}")
        curves.append([r["valid"] for r in result.history])
    mean = np.mean(np.array(curves, dtype=np.float64), axis=0)
    return int(np.argmax(mean)), mean.tolist()
