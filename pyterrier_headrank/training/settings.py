"""The settings of ``HeadRank.fit``: selection, alignment (the :class:`~.trainer.AlignSettings` it extends),
position bias and fusion."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional, Tuple

from .trainer import AlignSettings


@dataclass
class FitSettings(AlignSettings):
    """Settings of :meth:`HeadRank.fit` and their defaults: the alignment's own (:class:`AlignSettings`, inherited,
    so that each is written once) and the steps around it.

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
    cv_folds: int = 3
    slot_correction: bool = False
    fuse: bool = False
    verbose: bool = True

    def replace(self, **overrides) -> "FitSettings":
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise TypeError(f"HeadRank.fit: unknown setting(s) {unknown}; known: {sorted(names)}")
        return dataclasses.replace(self, **overrides)

    def align_settings(self) -> AlignSettings:
        """The alignment's part of these settings."""
        return AlignSettings(**{f.name: getattr(self, f.name) for f in dataclasses.fields(AlignSettings)})

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["targets"] = list(self.targets)
        return data
