"""Choosing heads from relevance judgements: per-head profiles and entropy-regularised selection.

For every (layer, head) of the model, measured on training candidate lists:

* **discriminability**: how well that head alone orders the candidates: nDCG@10 (ir_measures) of the ranking by its
  calibrated attention mass, averaged over the queries;
* **focus**: the normalised entropy ``H(p) / log(n)`` of the head's attention over the ``n`` candidates
  (``p`` = its uncalibrated passage masses divided by their sum), averaged over the queries. 0 means all attention on
  one passage, 1 means spread evenly.

A head's selection score is ``discriminability - lam * entropy``; the top ``k`` heads form the :class:`HeadSet`.
One truncated pass per list with every head of the layers up to ``max_layer`` gives all heads' scores at once.
This is usable on its own, without alignment (training-free selection, as QRHead does).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
import pandas as pd
import pyterrier as pt
import torch

from .attention import AttentionReader
from .heads import HeadSet
from .prompt import Window

#: The measure a head's discriminability is judged by (and HeadRank's validation measure).
MEASURE = "nDCG@10"


def default_max_layer(num_layers: int, fraction: float = 2 / 3) -> int:
    """Deepest layer that selection considers by default: two thirds of the depth (layer 19 of 30).

    Attention rerankers find their signal in the lower and middle layers (on SmolLM2-135M the useful heads sit in
    layers 4-18 of 30), and the deepest selected layer sets the cost of every later pass, so selection looks no deeper.
    """
    return max(0, min(num_layers - 1, int(round(num_layers * fraction)) - 1))


def head_ndcg(per_head_scores: Sequence[np.ndarray], labels: Sequence[np.ndarray], qids: Sequence[str],
              measure: str = MEASURE) -> np.ndarray:
    """Mean ``measure`` (ir_measures) of the ranking each head gives, over the lists: ``[heads]``.

    ``per_head_scores[q]`` is ``[heads, n_q]`` (higher is better), ``labels[q]`` the graded relevance of the ``n_q``
    candidates (0 for unjudged). Queries without any relevant candidate count as 0 for every head, as in trec_eval
    over a fixed query set; they do not change which head is best.
    """
    import ir_measures

    parsed = ir_measures.parse_measure(measure)
    num_heads = per_head_scores[0].shape[0]
    run_q, run_d, run_s, rel_q, rel_d, rel_r = [], [], [], [], [], []
    for qid, scores, grades in zip(qids, per_head_scores, labels):
        n = scores.shape[1]
        docs = [str(j) for j in range(n)]
        for h in range(num_heads):
            key = f"{qid}\t{h}"
            run_q += [key] * n
            run_d += docs
            run_s.append(scores[h])
            for j in np.flatnonzero(np.asarray(grades) > 0):
                rel_q.append(key)
                rel_d.append(str(j))
                rel_r.append(int(grades[j]))
    run = pd.DataFrame({"query_id": run_q, "doc_id": run_d, "score": np.concatenate(run_s).astype(float)})
    qrels = pd.DataFrame({"query_id": rel_q, "doc_id": rel_d, "relevance": rel_r})
    totals = np.zeros(num_heads)
    if len(qrels):
        for row in ir_measures.iter_calc([parsed], qrels, run):
            totals[int(row.query_id.rsplit("\t", 1)[1])] += row.value
    return totals / max(1, len(qids))


def normalised_entropy(mass: np.ndarray) -> np.ndarray:
    """``H(p) / log(n)`` of each row of non-negative ``mass`` ``[..., n]`` (``p`` = row / row sum); 1 if n < 2."""
    mass = np.clip(np.asarray(mass, dtype=np.float64), 0.0, None)
    n = mass.shape[-1]
    if n < 2:
        return np.ones(mass.shape[:-1])
    p = mass / np.clip(mass.sum(-1, keepdims=True), 1e-30, None)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -np.where(p > 0, p * np.log(p), 0.0).sum(-1)
    return h / np.log(n)


@dataclass
class HeadProfile:
    """Per-head discriminability and entropy over a model's ``[layers, heads]`` grid (NaN where not measured)."""

    ndcg: np.ndarray
    entropy: np.ndarray
    num_queries: int
    max_layer: int
    measure: str = MEASURE
    notes: dict = field(default_factory=dict)

    @property
    def shape(self):
        return self.ndcg.shape

    def scores(self, lam: float) -> np.ndarray:
        """Selection score of each head: ``ndcg - lam * entropy`` (NaN for heads not measured)."""
        return self.ndcg - float(lam) * self.entropy

    def select(self, k: int = 8, lam: float = 0.1, name: Optional[str] = None) -> HeadSet:
        """The ``k`` heads with the highest selection score (ties: shallower layer, then lower head index).

        Weights are 1 (the score sums the heads' calibrated masses). The deepest chosen layer is where passes stop.
        """
        scores = self.scores(lam)
        measured = np.argwhere(~np.isnan(scores))
        if len(measured) == 0:
            raise ValueError("HeadRank: the head profile has no measured heads")
        k = int(k)
        if not 1 <= k <= len(measured):
            raise ValueError(f"HeadRank: k={k} heads requested, {len(measured)} measured")
        order = sorted(((-scores[l, h], l, h) for l, h in measured))[:k]
        heads = tuple((int(l), int(h)) for _, l, h in order)
        return HeadSet(heads, name=name or f"selected k={k} lambda={lam:g} on {self.num_queries} queries")

    # ---- serialisation (JSON-friendly, NaN as None) --------------------------------------------------------------
    def to_dict(self) -> dict:
        def grid(a):
            return [[None if np.isnan(v) else round(float(v), 6) for v in row] for row in a]
        return {"measure": self.measure, "num_queries": self.num_queries, "max_layer": self.max_layer,
                "ndcg": grid(self.ndcg), "entropy": grid(self.entropy), "notes": self.notes}

    @classmethod
    def from_dict(cls, data: dict) -> "HeadProfile":
        def grid(rows):
            return np.array([[np.nan if v is None else v for v in row] for row in rows], dtype=np.float64)
        return cls(grid(data["ndcg"]), grid(data["entropy"]), int(data["num_queries"]), int(data["max_layer"]),
                   data.get("measure", MEASURE), dict(data.get("notes") or {}))


def read_all_heads(reader: AttentionReader, windows: Sequence[Window], max_layer: int, calibrate: bool = True,
                   batch_size: int = 1, desc: str = "HeadRank head profile", verbose: bool = True):
    """Calibrated and raw passage mass of every head of layers ``0..max_layer`` for each window.

    Returns two lists (one ``[heads, n]`` array per window, heads in layer-major order): calibrated mass (the
    ranking signal) and raw mass (for the entropy).
    """
    heads = HeadSet.all_heads(max_layer + 1, reader.num_heads)
    calibrated, raw = [], []
    with torch.inference_mode(), pt.tqdm(total=len(windows), desc=desc, unit="list", disable=not verbose) as bar:
        for start in range(0, len(windows), batch_size):
            batch = list(windows[start:start + batch_size])
            readout = reader.read(batch, heads, calibrate=calibrate)
            for b, window in enumerate(batch):
                n = window.num_passages
                mass = readout.passage_mass[b, :, :n].double().cpu().numpy()
                cal = mass - readout.calibration_passage_mass[b, :, :n].double().cpu().numpy() if calibrate else mass
                calibrated.append(cal)
                raw.append(mass)
            bar.update(len(batch))
    return calibrated, raw


def read_training_masses(reader: AttentionReader, windows: Sequence[Window], max_layer: Optional[int] = None,
                         calibrate: bool = True, batch_size: int = 1, verbose: bool = True):
    """:func:`read_all_heads` on training lists, with the checks a fit needs first: some lists, and a ``max_layer``
    inside the model (None: :func:`default_max_layer`)."""
    if not windows:
        raise ValueError("HeadRank: no training lists to select heads on")
    max_layer = default_max_layer(reader.num_layers) if max_layer is None else int(max_layer)
    if not 0 <= max_layer < reader.num_layers:
        raise ValueError(f"HeadRank: max_layer={max_layer} is outside a model with {reader.num_layers} layers")
    return read_all_heads(reader, windows, max_layer, calibrate, batch_size, verbose=verbose)


def profile_heads(reader: AttentionReader, windows: Sequence[Window], labels: Sequence[np.ndarray],
                  qids: Sequence[str], max_layer: Optional[int] = None, calibrate: bool = True, batch_size: int = 1,
                  measure: str = MEASURE, verbose: bool = True) -> HeadProfile:
    """Measure every head of layers ``0..max_layer`` on the training lists (one truncated pass per batch)."""
    calibrated, raw = read_training_masses(reader, windows, max_layer, calibrate, batch_size, verbose)
    return profile_from_masses(calibrated, raw, labels, qids, (reader.num_layers, reader.num_heads), measure)


def profile_from_masses(calibrated: Sequence[np.ndarray], raw: Sequence[np.ndarray], labels: Sequence[np.ndarray],
                        qids: Sequence[str], shape: tuple, measure: str = MEASURE) -> HeadProfile:
    """A :class:`HeadProfile` from masses already read (:func:`read_all_heads`'s two lists, or stored copies of
    them): each ``[heads, n]`` array holds every head of layers ``0..max_layer``, layer-major; ``shape`` is the
    model's ``(layers, heads per layer)``. Selection over stored masses needs no model pass."""
    num_layers, num_heads = shape
    measured = calibrated[0].shape[0]
    if measured % num_heads or measured > num_layers * num_heads:
        raise ValueError(f"HeadRank: {measured} heads read do not fill whole layers of {num_heads} heads")
    ndcg = np.full((num_layers, num_heads), np.nan)
    entropy = np.full((num_layers, num_heads), np.nan)
    ndcg.reshape(-1)[:measured] = head_ndcg(calibrated, labels, qids, measure)
    entropy.reshape(-1)[:measured] = np.mean([normalised_entropy(m) for m in raw], axis=0)
    return HeadProfile(ndcg, entropy, len(calibrated), measured // num_heads - 1, measure)
