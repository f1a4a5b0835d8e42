"""The alignment training loop: settings, the loss of one list, epochs with early stopping."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import List, Sequence

import numpy as np
import pyterrier as pt
import torch

from .losses.omega import regulariser
from .losses.pairwise import pairwise_loss
from .pairs import preference_pairs
from .replay import AttentionReplay, CachedList, has_pairs, prepare


@dataclass
class AlignSettings:
    """Hyper-parameters of alignment (what each term of the loss does: docs/design.md, "Training")."""

    epochs: int = 4              # at most this many epochs
    lr: float = 1e-3             # learning rate (AdamW)
    weight_decay: float = 0.0
    beta: float = 1.0            # temperature of the pairwise (Bradley-Terry) loss
    gamma: float = 0.01          # weight of the entropy term of Omega
    eta: float = 0.01            # weight of the middle-zone variance term of Omega
    reference: bool = False      # DPO-style margin, relative to the starting model
    max_pairs: int = 32          # preference pairs per list, hardest first
    hard_negatives: int = 3      # each relevant passage also over this many top-scored passages of the lowest grade
    patience: int = 2            # early stopping: epochs without a better validation score
    seed: int = 0


@dataclass
class AlignResult:
    """What training did: per-epoch mean loss and validation measure (epoch 0 = before training)."""

    history: List[dict] = field(default_factory=list)
    best_epoch: int = 0
    steps: int = 0
    seconds: float = 0.0


def list_loss(replay_scores: torch.Tensor, item: CachedList, settings: AlignSettings) -> torch.Tensor:
    """The training loss of one list: pairwise preference loss on the current scores plus Omega."""
    pairs = preference_pairs(item.labels, replay_scores.detach().cpu().numpy(), settings.max_pairs,
                             settings.hard_negatives)
    loss = pairwise_loss(replay_scores, pairs, settings.beta, item.scale,
                         item.initial if settings.reference else None)
    return loss + regulariser(replay_scores, item.middle, settings.gamma, settings.eta, item.scale)



def train_adapters(replay: AttentionReplay, train: Sequence[CachedList], settings: AlignSettings,
                   evaluate=None, verbose: bool = True, desc: str = "HeadRank alignment") -> AlignResult:
    """Train the adapters of ``replay.model`` on ``train`` for up to ``settings.epochs`` epochs.

    ``evaluate(replay) -> float`` (higher is better; validation nDCG@10) is called before training and after every
    epoch; the best epoch's adapters are kept and training stops after ``patience`` epochs without improvement.
    Without ``evaluate``, all epochs run and the last adapters are kept. Trained: ``replay.parameters()``. Lists
    without two relevance levels give no pairs and are left out.
    """
    started = time.time()
    items = [item for item in train if has_pairs(item)]
    if not items:
        raise ValueError("HeadRank: no training list has two relevance levels among its candidates; nothing to align")
    for item in items:
        if item.initial is None:
            prepare(replay, [item])
    params = replay.parameters()
    optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    rng = np.random.default_rng(settings.seed)
    result = AlignResult()
    best_value = evaluate(replay) if evaluate is not None else None
    best_state = replay.state()
    result.history.append({"epoch": 0, "loss": None, "valid": best_value})
    waited = 0
    with pt.tqdm(total=settings.epochs * len(items), desc=desc, unit="list", disable=not verbose) as bar:
        for epoch in range(1, settings.epochs + 1):
            total, running = 0.0, None
            for index in rng.permutation(len(items)):
                item = items[index]
                loss = list_loss(replay.scores(item), item, settings)
                optimizer.zero_grad(set_to_none=True)
                loss.backward(inputs=params)
                optimizer.step()
                value = float(loss.detach())
                total += value
                running = value if running is None else 0.9 * running + 0.1 * value
                result.steps += 1
                bar.set_postfix(loss=f"{running:.4f}", valid_ndcg10="-" if best_value is None else f"{best_value:.4f}")
                bar.update(1)
            record = {"epoch": epoch, "loss": total / len(items), "valid": None}
            if evaluate is not None:
                record["valid"] = value = evaluate(replay)
                if value > best_value + 1e-6:
                    best_value, best_state, result.best_epoch, waited = value, replay.state(), epoch, 0
                else:
                    waited += 1
                bar.set_postfix(loss=f"{record['loss']:.4f}", valid_ndcg10=f"{value:.4f}")
            result.history.append(record)
            if evaluate is not None and waited >= settings.patience:
                break
    if evaluate is not None:
        replay.load_state(best_state)
    else:
        result.best_epoch = result.history[-1]["epoch"]
    result.seconds = time.time() - started
    return result
