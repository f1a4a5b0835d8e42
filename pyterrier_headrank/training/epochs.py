"""How long to align: the number of epochs chosen on validation lists, by cross-fitting, or fixed.

Small training sets overfit within an epoch or two, so the number of epochs is never chosen on the training lists
themselves. :func:`align_cached` is the whole alignment step on lists already cached for replay
(:meth:`~.replay.AttentionReplay.capture`): ``HeadRank.fit`` calls it after caching, and a benchmark that caches each
list once for several folds calls it per fold.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence, Tuple

import numpy as np
import torch

from ..metrics import ndcg10
from .replay import AttentionReplay, CachedList, has_pairs
from .trainer import AlignResult, AlignSettings, train_adapters


def replay_ndcg10(replay: AttentionReplay, items: Sequence[CachedList], qrels) -> float:
    """nDCG@10 of the replayed scores of ``items`` under the current adapters and head weights."""
    with torch.no_grad():
        return ndcg10({it.qid: (it.docnos, replay.scores(it).cpu().numpy()) for it in items}, qrels)


def align_cached(replay: AttentionReplay, train: Sequence[CachedList], qrels, settings: AlignSettings,
                 cv_folds: int = 3, valid: Sequence[CachedList] = (), valid_qrels=None,
                 verbose: bool = False) -> Tuple[AlignResult, dict]:
    """Train ``replay``'s adapters (and head weights) on ``train``; return what training did and how the number of
    epochs was chosen.

    * ``valid`` given: early stopping on its nDCG@10 (``valid_qrels``), the best epoch kept (epoch 0 included);
    * else ``cv_folds`` > 1: the epoch count with the best mean out-of-fold nDCG@10 over ``cv_folds`` folds of the
      training lists (``qrels``), then one run of that many epochs on all of them (0: the starting adapters stay);
    * else ``settings.epochs``, fixed.

    ``replay`` starts from its current state; afterwards it holds the chosen adapters and weights.
    """
    if valid:
        result = train_adapters(replay, train, settings, lambda rep: replay_ndcg10(rep, valid, valid_qrels),
                                verbose=verbose)
        return result, {"chosen_by": "validation (early stopping)"}
    if not (cv_folds and cv_folds > 1):
        return train_adapters(replay, train, settings, None, verbose=verbose), {"chosen_by": "fixed epochs"}
    initial = replay.state()
    epochs, curve = cross_fitted_epochs(replay, train, qrels, settings, cv_folds, verbose)
    replay.load_state(initial)
    info = {"chosen_by": f"{cv_folds}-fold cross-fitting", "cv_mean_ndcg10_by_epoch": [round(v, 4) for v in curve]}
    if epochs == 0:  # cross-fitting preferred no alignment: keep the starting (identity) adapters
        return AlignResult(history=[{"epoch": 0, "loss": None, "valid": None}]), info
    return train_adapters(replay, train, dataclasses.replace(settings, epochs=epochs), None, verbose=verbose), info


def cross_fitted_epochs(replay: AttentionReplay, items: Sequence[CachedList], qrels, settings: AlignSettings,
                        folds: int, verbose: bool = False) -> Tuple[int, list]:
    """(epochs with the best mean out-of-fold nDCG@10, that mean after each epoch, epoch 0 first) over ``folds``
    folds of the lists that have pairs. Fewer than two such lists: ``settings.epochs`` and no curve. Leaves
    ``replay`` in the state of the last fold's run."""
    usable = [item for item in items if has_pairs(item)]
    folds = min(folds, len(usable))
    if folds < 2:
        return settings.epochs, []
    initial = replay.state()
    order = np.random.default_rng(settings.seed).permutation(len(usable))
    curves = []
    for fold in range(folds):
        held = [usable[i] for i in order[fold::folds]]
        rest = [usable[i] for j, i in enumerate(order) if j % folds != fold]
        replay.load_state(initial)
        run = dataclasses.replace(settings, patience=settings.epochs + 1, seed=settings.seed + fold + 1)
        result = train_adapters(replay, rest, run, lambda rep, held=held: replay_ndcg10(rep, held, qrels),
                                verbose=verbose, desc=f"HeadRank cross-fitting {fold + 1}/{folds}")
        curves.append([record["valid"] for record in result.history])
    mean = np.mean(np.array(curves, dtype=np.float64), axis=0)
    return int(np.argmax(mean)), mean.tolist()
