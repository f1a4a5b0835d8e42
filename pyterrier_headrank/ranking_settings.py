"""The settings of a listwise reranker, written once: :class:`ListSettings` (what every listwise reranker over a local
LLM takes) and :class:`RankingSettings` (what the attention rerankers add: windows, order, fusion, slot correction).

Each field says what it is for (``role`` in its metadata):

* ``"scores"``: it decides the scores, so a saved fit records it and the score cache keys on it;
* ``"model"``: how the model is loaded (``dtype``): it changes the scores, so the cache keys on it, but a saved fit
  leaves it to where the fit is used;
* ``"run"``: how the work is done (``batch_size``, ``device``, ``compile``, ``verbose``): the scores do not change,
  so neither a saved fit nor the cache key holds it.

The rerankers keep their friendly keyword constructors; they build one of these objects (checked once, see
:meth:`ListSettings.checked`), and every setting reads and writes as an attribute of the reranker too
(``reranker.n_anchors``), backed by that object.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Optional, Sequence, Tuple

from .fusion import check_weight
from .slots import check_slot_bias

#: Prompt orders: which way each window's passages run in the prompt (the query always comes last), as prompt
#: directions (``False``: first-stage order, the top candidate first; ``True``: reversed, the top candidate last,
#: next to the query, as ICR places it). ``averaged`` scores both and averages each passage's two scores.
ORDERS = {"first-stage": (False,), "reversed": (True,), "averaged": (False, True)}
#: passages of the window before that HeadRank repeats in each later window (``HeadRank(window_overlap=...)``)
DEFAULT_OVERLAP = 0

SCORES, MODEL, RUN = "scores", "model", "run"


def _setting(default, role: str = SCORES):
    return field(default=default, metadata={"role": role})


def whole(value, setting: str, owner: str, optional: bool = False) -> Optional[int]:
    """A count setting as an int (``None`` kept where the setting allows it); a NaN, a fraction or a string is
    refused with the setting's name, not with Python's own conversion error."""
    if value is None and optional:
        return None
    try:
        if isinstance(value, bool) or float(value) != int(value):
            raise ValueError
        return int(value)
    except (TypeError, ValueError, OverflowError):
        allowed = "a whole number or None" if optional else "a whole number"
        raise ValueError(f"{owner}: {setting}={value!r} must be {allowed}") from None


@dataclass(frozen=True)
class ListSettings:
    """What any listwise reranker here takes: where the passage text is, how much of it is read, how the model runs."""

    text_field: str = _setting("text")              # the column holding passage text
    max_passage_tokens: int = _setting(128)         # each passage is cut to this many tokens
    max_query_tokens: int = _setting(64)            # the query is cut to this many tokens
    dtype: object = _setting("auto", MODEL)         # "auto": bf16 on GPU, float32 on CPU
    batch_size: Optional[int] = _setting(None, RUN)  # prompts per forward pass; None: the reranker decides
    device: object = _setting(None, RUN)            # None: CUDA when present, else CPU
    verbose: bool = _setting(False, RUN)            # show a progress bar

    @classmethod
    def names(cls, *roles: str) -> Tuple[str, ...]:
        """The settings' names, in declaration order; only those of ``roles`` when given."""
        return tuple(f.name for f in dataclasses.fields(cls) if not roles or f.metadata["role"] in roles)

    @classmethod
    def pick(cls, arguments: dict) -> "ListSettings":
        """These settings from a constructor's keyword ``arguments`` (its ``locals()``): those named here, the
        rest left at their defaults. So a constructor lists each setting once, in its signature."""
        return cls(**{name: arguments[name] for name in cls.names() if name in arguments})

    def values(self, *roles: str) -> dict:
        """``{name: value}`` of the settings of ``roles`` (all when none are given)."""
        return {name: getattr(self, name) for name in self.names(*roles)}

    def replace(self, **changes) -> "ListSettings":
        return dataclasses.replace(self, **changes)

    def checked(self, owner: str) -> "ListSettings":
        """These settings with counts as ints, or a ``ValueError`` naming ``owner`` and the setting."""
        counts = dict(batch_size=whole(self.batch_size, "batch_size", owner, optional=True),
                      max_passage_tokens=whole(self.max_passage_tokens, "max_passage_tokens", owner),
                      max_query_tokens=whole(self.max_query_tokens, "max_query_tokens", owner))
        if min(1 if counts["batch_size"] is None else counts["batch_size"], counts["max_passage_tokens"],
               counts["max_query_tokens"]) < 1:
            raise ValueError(f"{owner}: batch_size, max_passage_tokens and max_query_tokens must be >= 1")
        return self.replace(**counts)


@dataclass(frozen=True)
class RankingSettings(ListSettings):
    """What the attention rerankers (HeadRank, ICR) add: the calibration, the prompt windows of a long list, the
    prompt order, the cascade, fusion with the first stage and the slot correction. HeadRank documents each."""

    calibrate: bool = _setting(True)                  # subtract the attention of the content-free query "N/A"
    max_window_tokens: Optional[int] = _setting(4096)  # one prompt's token budget; None: the model's context
    max_window_passages: int = _setting(50)           # at most this many passages per window
    n_anchors: int = _setting(3)                      # passages shared by all windows of a list
    window_overlap: int = _setting(DEFAULT_OVERLAP)   # passages of the window before, repeated in the next
    rescore_top: Optional[int] = _setting(20)         # a long list's pool, rescored in one window (the cascade)
    order: str = _setting("first-stage")              # one of ORDERS
    fuse: Optional[float] = _setting(None)            # the first stage's weight in fusion; None: attention alone
    slot_bias: Optional[Sequence[float]] = _setting(None)  # per-slot correction of position bias; None: none
    compile: bool = _setting(False, RUN)              # torch.compile the decoder layers that run

    def checked(self, owner: str) -> "RankingSettings":
        base = super().checked(owner)
        checked = base.replace(
            max_window_tokens=whole(self.max_window_tokens, "max_window_tokens", owner, optional=True),
            max_window_passages=whole(self.max_window_passages, "max_window_passages", owner),
            n_anchors=whole(self.n_anchors, "n_anchors", owner),
            window_overlap=whole(self.window_overlap, "window_overlap", owner),
            rescore_top=whole(self.rescore_top, "rescore_top", owner, optional=True),
            fuse=check_weight(self.fuse, owner), slot_bias=check_slot_bias(self.slot_bias, owner),
            compile=bool(self.compile))
        checked._check_windows(owner)
        return checked

    def _check_windows(self, owner: str) -> None:
        if self.max_window_tokens is not None and self.max_window_tokens < 1:
            raise ValueError(f"{owner}: max_window_tokens must be >= 1 (or None for the model's context length)")
        if self.order not in ORDERS:
            raise ValueError(f"{owner}: order={self.order!r} is not one of {', '.join(map(repr, ORDERS))}")
        if min(self.n_anchors, self.window_overlap) < 0 or \
                self.max_window_passages < self.n_anchors + self.window_overlap + 1:
            raise ValueError(f"{owner}: need n_anchors >= 0, window_overlap >= 0 and "
                             f"max_window_passages > n_anchors + window_overlap")
        if self.rescore_top is not None and self.rescore_top < 1:
            raise ValueError(f"{owner}: rescore_top={self.rescore_top!r} must be None or at least 1")
