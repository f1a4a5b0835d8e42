"""``HeadRank.fit``: select heads from qrels, then align them to relevance; and fusion with the first stage.

The steps, on the training candidate lists (each query's candidates in first-stage order, first prompt window only):

1. **Selection** (``select=True``): one truncated pass per list reads every head of layers ``0..max_layer``; heads
   are ranked by nDCG@10 minus ``lam`` x normalised entropy (:mod:`~pyterrier_headrank.selection`); the top ``k`` form
   the head set. With ``weighting="pairwise"`` the head set is instead every head of those layers, weighted by a
   pairwise logistic fit on the same masses (:mod:`~pyterrier_headrank.head_weights`, strength ``c``).
   Training-free: with ``align=False`` this is all that fit does.
2. **Alignment** (``align=True``): the head weights (``learn_weights``) and LoRA adapters on q/k of the
   ``adapt_layers`` deepest layers holding selected heads, trained on cached hidden states of the frozen layers below
   (:mod:`~pyterrier_headrank.training`). The number of
   epochs is chosen on the validation lists when given (early stopping, best epoch kept, epoch 0 = no alignment
   included), else by cross-fitting over ``cv_folds`` folds of the training lists (out-of-fold nDCG@10 per epoch),
   else fixed. Small training sets overfit fast, so epochs are never chosen on the training lists themselves.

Settings come from :class:`FitSettings` (``reranker.fit_settings``, for pipelines whose ``fit`` passes only the data)
overridden by keyword arguments of ``fit``. Fits are repeatable for a given ``seed``. :func:`fit` returns what it
learned as :class:`~pyterrier_headrank.fit_parts.FitParts` (what a saved folder holds too) and leaves the reranker
as it was; ``HeadRank.fit`` applies the result (``HeadRank.apply_fit``).
"""
from __future__ import annotations

import datetime
import time
import warnings
from typing import Sequence, Tuple

import numpy as np
import pyterrier as pt

from ..candidates import CandidateList
from ..fit_parts import FitParts
from ..fusion import best_weight
from ..head_weights import learn_head_weights
from ..heads import HeadSet
from ..listwise import ListwiseReranker, check_finite_column
from ..lora import Adapter, AdapterConfig, adapted_layers, attach_lora, lora_state
from ..metrics import ndcg10
from ..selection import profile_from_masses, read_training_masses
from ..slots import learn_slot_bias
from .epochs import align_cached
from .lists import check_qrels, graded_lists
from .replay import AttentionReplay, has_pairs, prepare
from .settings import FitSettings


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


def fit(reranker: ListwiseReranker, train, train_qrels, valid=None, valid_qrels=None, **overrides) -> FitParts:
    """Fit ``reranker`` and return what was learned (``HeadRank.apply_fit`` applies it; the reranker itself is not
    changed); see the module docstring. ``reranker`` is a listwise reranker that reads attention and takes a fit: a
    :class:`~pyterrier_headrank.HeadRank` (its ``engine``, ``windows``, ``unfitted`` and ``with_fit``)."""
    settings = _checked_settings(reranker, overrides, valid is not None)
    started = time.time()
    # a fresh fit starts from the base model with the reranker's own heads (or the zero-shot default); what a
    # registered default fit set (its adapter, fusion weight, slot correction) goes, the caller's settings stay
    base = reranker.unfitted()
    reader, _, start_heads = base.engine()
    train_lists = graded_lists(train, train_qrels, base.text_field)
    train_qrels = check_qrels(train_qrels)
    if valid is not None and valid_qrels is None:
        raise ValueError("HeadRank.fit: validation results need validation qrels")
    valid_lists = graded_lists(valid, valid_qrels, base.text_field, "validation") if valid is not None else []
    if settings.fuse and "score" in valid.columns:  # the weight is chosen on them: NaN would score every weight alike
        check_finite_column(valid, "score", "HeadRank.fit", "fuse=True fuses the validation lists with their "
                            "first-stage score", "fix the first stage's scores, or fit without fuse=True")
    valid_qrels = check_qrels(valid_qrels, "validation qrels") if valid is not None else None
    train_windows, train_kept = _windows(base, train_lists)
    valid_windows, valid_kept = _windows(base, valid_lists)
    summary = {
        "model": base.model_name,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "settings": settings.to_dict(),
        "train": _describe(train_lists, train_kept),
        "valid": _describe(valid_lists, valid_kept) if valid is not None else None,
    }
    heads, profile, adapter = start_heads, None, None
    if settings.select:
        heads, profile, summary["selection"] = _select(reader, settings, train_lists, train_windows, train_kept,
                                                       base.calibrate)
    if settings.align:
        heads, adapter, summary["alignment"] = _align(base, reader, heads, settings, train_lists, train_windows,
                                                      train_kept, train_qrels, valid_lists, valid_windows,
                                                      valid_kept, valid_qrels)
    learned = {"fuse": base.fuse, "slot_bias": None if settings.slot_correction else base.slot_bias}

    def parts() -> FitParts:  # what has been learned so far (``learned`` and ``summary`` fill in below)
        return FitParts(base.model_name, None, heads, dict(learned), adapter, profile, summary)

    fitted = base.with_fit(parts())
    if valid is not None and not settings.align:
        summary["valid_ndcg10"] = _validation_ndcg(fitted, valid_lists, valid_kept, valid_qrels)
    if settings.slot_correction:  # learned on the fitted reranker's uncorrected scores
        learned["slot_bias"] = summary["slot_bias"] = _slot_bias(fitted, train_lists, train_kept)
        fitted = base.with_fit(parts())
    if settings.fuse:
        learned["fuse"], summary["fusion"] = _fusion_weight(fitted, valid_lists, valid_kept, valid_qrels)
    summary["seconds"] = round(time.time() - started, 1)
    return parts()


def _checked_settings(reranker, overrides: dict, has_validation: bool) -> "FitSettings":
    """The reranker's fit settings with ``overrides``, refused early where they cannot work."""
    base = getattr(reranker, "fit_settings", None) or FitSettings()
    settings = base.replace(**overrides)
    if settings.weighting not in ("select", "pairwise"):
        raise ValueError(f"HeadRank.fit: weighting={settings.weighting!r} must be 'select' (the k heads of "
                         f"entropy-regularised selection) or 'pairwise' (every head, learned weights)")
    if not (isinstance(settings.c, (int, float)) and np.isfinite(settings.c) and settings.c > 0):
        raise ValueError(f"HeadRank.fit: c={settings.c!r} (the pairwise fit's inverse L2 strength) must be a "
                         f"positive number")
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
    labels = [lists[i].labels[kept[i]] for i in chosen]
    calibrated, raw = read_training_masses(reader, [windows[i] for i in chosen], settings.max_layer, calibrate,
                                           verbose=settings.verbose)
    profile = profile_from_masses(calibrated, raw, labels, [lists[i].qid for i in chosen],
                                  (reader.num_layers, reader.num_heads))
    if settings.weighting == "pairwise":
        heads = learn_head_weights(calibrated, labels, reader.num_heads, profile.max_layer, settings.c)
    else:
        heads = profile.select(settings.k, settings.lam)
    summary = {"queries": len(chosen), "weighting": settings.weighting, "k": settings.k, "lambda": settings.lam,
               "c": settings.c, "max_layer": profile.max_layer, "heads": heads.to_dict(),
               "head_ndcg10": [round(float(profile.ndcg[l, h]), 4) for l, h in heads.heads],
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
           valid_lists, valid_windows, valid_kept, valid_qrels) -> Tuple[HeadSet, Adapter, dict]:
    """LoRA adapters (and head weights) aligned on the training lists: (aligned heads, adapter, what was done)."""
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
    info = {"adapter": config.to_dict(), "replayed_layers": [replay.first, replay.deepest],
            "train_lists_with_pairs": int(sum(has_pairs(i) for i in train_items)),
            "cache_seconds": round(cache_seconds, 1)}
    result, chosen = align_cached(replay, train_items, train_qrels, settings.align_settings(), settings.cv_folds,
                                  valid_items, valid_qrels, verbose=settings.verbose)
    info.update(chosen)
    info.update({"history": result.history, "best_epoch": result.best_epoch, "steps": result.steps,
                 "train_seconds": round(result.seconds, 1)})
    if valid_items:
        info["valid_ndcg10_before"] = result.history[0]["valid"]
        info["valid_ndcg10_after"] = max(r["valid"] for r in result.history)
    aligned = replay.head_set()
    info["head_weights"] = [round(w, 4) for w in aligned.weights]
    return aligned, Adapter(config, lora_state(adapted), adapted, reader.model), info

