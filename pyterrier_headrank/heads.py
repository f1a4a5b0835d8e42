"""Which attention heads HeadRank reads, and how much each one counts.

A :class:`HeadSet` is an ordered list of (layer, head) pairs with weights. The deepest layer it names is where the
forward pass stops, so a head set decides both the ranking signal and the cost of a pass.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple, Union

HeadLike = Union["HeadSet", Sequence[Tuple[int, int]], Sequence[Tuple[int, int, float]], dict, str, None]
#: The name of the training-free head set: ``HeadRank(model, heads="zero-shot")``.
ZERO_SHOT = "zero-shot"
#: The training-free head set (every head of the layers between these fractions of the depth) and its prompt order,
#: chosen by ``benchmarks/training_free.py`` (docs/design.md). For a 30-layer model that is layers 15-22: the pass
#: stops at three quarters of the depth.
TRAINING_FREE_LAYERS = (0.5, 0.75)
TRAINING_FREE_ORDER = "reversed"


@dataclass(frozen=True)
class HeadSet:
    """Selected (layer, head) pairs, each with a weight; the score sums weighted head scores."""

    heads: Tuple[Tuple[int, int], ...]
    weights: Tuple[float, ...] = field(default=())
    name: str = "custom"

    def __post_init__(self):
        heads = tuple(_pair(item) for item in self.heads)
        if not heads:
            raise ValueError("HeadRank: a head set needs at least one (layer, head) pair")
        if len(set(heads)) != len(heads):
            raise ValueError("HeadRank: the head set names a (layer, head) pair twice")
        given = tuple(self.weights) if self.weights else (1.0,) * len(heads)
        if len(given) != len(heads):
            raise ValueError(f"HeadRank: {len(heads)} heads but {len(given)} weights")
        weights = tuple(_weight(w, pair) for w, pair in zip(given, heads))
        object.__setattr__(self, "heads", heads)
        object.__setattr__(self, "weights", weights)

    # ---- construction -------------------------------------------------------------------------------------------
    @classmethod
    def middle_layers(cls, num_layers: int, num_heads: int, start: float = 0.25, stop: float = 0.5) -> "HeadSet":
        """Every head of the layers from ``start`` to ``stop`` of the depth (inclusive); for a 30-layer model the
        defaults give layers 7 to 15. :meth:`training_free` is this band at :data:`TRAINING_FREE_LAYERS`."""
        first = max(0, int(num_layers * start))
        last = max(first, min(num_layers - 1, int(num_layers * stop)))
        heads = [(layer, head) for layer in range(first, last + 1) for head in range(num_heads)]
        return cls(tuple(heads), name=f"zero-shot layers {first}-{last}")

    @classmethod
    def training_free(cls, num_layers: int, num_heads: int) -> "HeadSet":
        """The training-free head set for a model of this shape (:data:`TRAINING_FREE_LAYERS`)."""
        start, stop = TRAINING_FREE_LAYERS
        return cls.middle_layers(num_layers, num_heads, start, stop)

    @classmethod
    def all_heads(cls, num_layers: int, num_heads: int) -> "HeadSet":
        """Every head of every layer (what ICR reads): a full-depth pass."""
        return cls(tuple((l, h) for l in range(num_layers) for h in range(num_heads)), name="all heads")

    @classmethod
    def coerce(cls, value: HeadLike) -> Optional["HeadSet"]:
        """Accept a HeadSet, a list of (layer, head) or (layer, head, weight), a dict from :meth:`to_dict`, or None.

        ``None`` and ``"zero-shot"`` both mean the training-free default (:meth:`middle_layers`, chosen once the
        model's shape is known); ``"zero-shot"`` says so explicitly.
        """
        if value is None or isinstance(value, HeadSet):
            return value
        if isinstance(value, str):
            if value == ZERO_SHOT:
                return None
            raise ValueError(f"HeadRank: heads={value!r}: the only named head set is {ZERO_SHOT!r}; otherwise give "
                             f"(layer, head) or (layer, head, weight) tuples")
        if isinstance(value, dict):
            return cls.from_dict(value)
        items = list(value)
        if items and all(len(item) == 3 for item in items):
            return cls(tuple((l, h) for l, h, _ in items), tuple(w for _, _, w in items))
        if items and all(len(item) == 2 for item in items):
            return cls(tuple(tuple(item) for item in items))
        raise ValueError("HeadRank: heads must be (layer, head) or (layer, head, weight) tuples")

    # ---- properties ---------------------------------------------------------------------------------------------
    @property
    def deepest_layer(self) -> int:
        return max(layer for layer, _ in self.heads)

    def by_layer(self) -> Dict[int, List[int]]:
        """Head indices grouped by layer, in the order the heads appear in this set for each layer."""
        grouped: Dict[int, List[int]] = {}
        for layer, head in self.heads:
            grouped.setdefault(layer, []).append(head)
        return grouped

    def order_by_layer(self) -> List[int]:
        """Positions of this set's heads in the layer-grouped order that :meth:`by_layer` yields."""
        position = {pair: i for i, pair in enumerate(self.heads)}
        return [position[(layer, head)] for layer, heads in self.by_layer().items() for head in heads]

    def check_fits(self, num_layers: int, num_heads: int) -> None:
        """Raise a clear error if a head is outside a model of this shape."""
        for layer, head in self.heads:
            if not (0 <= layer < num_layers and 0 <= head < num_heads):
                raise ValueError(
                    f"HeadRank: head (layer {layer}, head {head}) does not exist in a model with {num_layers} layers "
                    f"of {num_heads} heads"
                )

    def __len__(self) -> int:
        return len(self.heads)

    def __repr__(self) -> str:
        return f"HeadSet({len(self.heads)} heads, layers<={self.deepest_layer}, {self.name})"

    # ---- serialisation ------------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"name": self.name, "heads": [[l, h] for l, h in self.heads], "weights": list(self.weights)}

    @classmethod
    def from_dict(cls, data: dict) -> "HeadSet":
        try:
            return cls(tuple(tuple(pair) for pair in data["heads"]), tuple(data.get("weights") or ()),
                       name=data.get("name", "custom"))
        except (KeyError, TypeError) as err:
            raise ValueError(f"HeadRank: not a head set: {err}") from err


def _pair(item) -> Tuple[int, int]:
    """A (layer, head) pair of whole numbers; anything else is refused with the pair in the message."""
    try:
        layer, head = item
        if float(layer) != int(layer) or float(head) != int(head):
            raise ValueError
        return int(layer), int(head)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"HeadRank: heads must be (layer, head) pairs of whole numbers, got {item!r}") from None


def _weight(value, pair: Tuple[int, int]) -> float:
    """A head's weight as a finite float: a NaN or infinite weight would make every score NaN or infinite."""
    try:
        weight = float(value)
    except (TypeError, ValueError):
        weight = math.nan
    if not math.isfinite(weight) or isinstance(value, bool):
        raise ValueError(f"HeadRank: the weight of head (layer {pair[0]}, head {pair[1]}) is {value!r}; head weights "
                         f"must be finite numbers")
    return weight
