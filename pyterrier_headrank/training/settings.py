"""The settings of ``HeadRank.fit``: selection, alignment (the :class:`~.trainer.AlignSettings` it extends),
position bias and fusion."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional, Tuple

from ..ranking_settings import whole
from .trainer import AlignSettings

#: the count settings, each with its smallest allowed value (None: any whole number)
COUNTS = {"k": 1, "max_layer": 0, "select_queries": 1, "adapt_layers": 0, "rank": 1, "cv_folds": 0, "epochs": 0,
          "max_pairs": 1, "hard_negatives": 0, "patience": 0, "seed": None}
#: the counts that may also be None (their own meaning: every layer up to the default depth, every training list)
OPTIONAL_COUNTS = frozenset({"max_layer", "select_queries"})


@dataclass
class FitSettings(AlignSettings):
    """Settings of :meth:`HeadRank.fit` and their defaults: the alignment's own (:class:`AlignSettings`, inherited,
    so that each is written once: ``epochs``, ``lr``, ``weight_decay``, ``beta``, ``gamma``, ``eta``, ``reference``,
    ``max_pairs``, ``hard_negatives``, ``patience``, ``seed``) and the steps around it, each documented beside it.
    """

    # ---- selection
    select: bool = True                     # choose heads; False keeps the reranker's heads
    k: int = 8                              # how many heads
    lam: float = 0.1                        # entropy penalty of the selection score
    max_layer: Optional[int] = None         # deepest layer considered; None: two thirds of the depth
    select_queries: Optional[int] = None    # profile at most this many training lists (drawn with seed); None: all
    weighting: str = "select"               # "select": the k heads, weight 1 each; "pairwise": every head of layers
    #                                         0..max_layer, weights from a pairwise logistic fit (head_weights.py)
    c: float = 1e-3                         # inverse L2 strength of the pairwise fit (weighting="pairwise")
    # ---- alignment
    align: bool = True                      # train LoRA adapters (and head weights) after selection
    learn_weights: bool = True              # also train the head weights
    adapt_layers: int = 1                   # LoRA on this many deepest layers holding selected heads; 0: all of them
    rank: int = 8                           # LoRA rank
    alpha: float = 16.0                     # LoRA alpha
    targets: Tuple[str, ...] = ("q_proj", "k_proj")  # the projections that get adapters
    cv_folds: int = 3                       # epochs chosen by cross-fitting when no validation data; 0 or 1: fixed
    # ---- position bias and fusion
    slot_correction: bool = False           # learn the per-slot correction (slots.py) and set it on the reranker
    fuse: bool = False                      # choose the fusion weight on the validation queries (needs them)
    verbose: bool = True                    # progress bars

    def __post_init__(self):
        """Counts are whole numbers within range (a fraction, NaN or string is refused by name, not truncated)."""
        for name, minimum in COUNTS.items():
            value = whole(getattr(self, name), name, "HeadRank.fit", optional=name in OPTIONAL_COUNTS)
            if value is not None and minimum is not None and value < minimum:
                raise ValueError(f"HeadRank.fit: {name}={value!r} must be >= {minimum}")
            setattr(self, name, value)

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
