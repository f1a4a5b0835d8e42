"""``FitParts``: what a fit of HeadRank is made of, as :func:`~pyterrier_headrank.training.fit.fit` returns it and a
saved folder holds it (:func:`~pyterrier_headrank.folder.read_fit`). A leaf module: it imports nothing of the
package, so that training, the folder format and the reranker can all name it (the field types are named in the
docstring)."""
from __future__ import annotations

from typing import Any, NamedTuple, Optional


class FitParts(NamedTuple):
    """A fit, which ``HeadRank.from_parts`` and ``HeadRank.apply_fit`` take.

    * ``model``: the model name it was fitted on (``None`` for a model given as an object), ``model_class`` its class;
    * ``heads``: the :class:`~pyterrier_headrank.heads.HeadSet`;
    * ``settings``: the ranking settings it sets (``order``, ``fuse``, ``slot_bias``, ...; from a folder, every setting
      of :class:`~pyterrier_headrank.ranking_settings.RankingSettings` that decides scores);
    * ``adapter``: the fitted LoRA :class:`~pyterrier_headrank.lora.Adapter` (from a folder, a
      :class:`~pyterrier_headrank.folder.SavedAdapter`, which checks the model's shape), or ``None``;
    * ``profile``: the per-head :class:`~pyterrier_headrank.selection.HeadProfile` of selection, or ``None``;
    * ``summary``: what fit recorded (data sizes, settings, curves, timings), or ``None``.
    """

    model: Optional[str]
    model_class: Optional[str]
    heads: Any
    settings: dict
    adapter: Optional[Any]
    profile: Optional[Any]
    summary: Optional[dict]
