"""Scores of any head set rebuilt from stored all-head profiles (``head_profiles.py``), without a model pass.

HeadRank's score of a passage is ``sum_h w_h * calibrated_mass[h]`` over the heads of its head set, then the slot
correction (per prompt slot), the average over prompt orders (``order="averaged"``) and optionally the fusion with
the first stage (:mod:`pyterrier_headrank.fusion`). :class:`Profile` redoes exactly those steps on stored masses, so
every system of the benchmarks is scored from one pass per list. Lists here are one window each (top-20).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np
import pandas as pd
from head_profiles import profile_path

from pyterrier_headrank.fusion import fuse_scores
from pyterrier_headrank.head_weights import learn_head_weights
from pyterrier_headrank.heads import HeadSet
from pyterrier_headrank.selection import HeadProfile, profile_from_masses
from pyterrier_headrank.slots import corrected, learn_slot_bias


@dataclass
class Profile:
    """All heads' masses of one (model, collection, prompt order); arrays in first-stage order, NaN-padded."""

    qids: np.ndarray
    docnos: np.ndarray
    first_stage: np.ndarray
    labels: np.ndarray
    calibrated: np.ndarray  # [lists, heads read, k]
    raw: np.ndarray
    num_layers: int
    num_heads: int
    reversed: bool

    @classmethod
    def load(cls, model: str, collection: str, order: str, k: int = 20, passage_tokens: int = 64) -> "Profile":
        path = profile_path(model, collection, order, k, passage_tokens)
        if not path.exists():
            raise FileNotFoundError(f"{path}: run head_profiles.py --model {model} --collections {collection} "
                                    f"--orders {order} first")
        with np.load(path, allow_pickle=True) as data:
            return cls(data["qids"], data["docnos"], data["first_stage"], data["labels"], data["calibrated"],
                       data["raw"], int(data["num_layers"]), int(data["num_heads"]), order == "reversed")

    def subset(self, keep: np.ndarray) -> "Profile":
        """The lists where ``keep`` (a boolean mask over lists) is true."""
        return Profile(self.qids[keep], self.docnos[keep], self.first_stage[keep], self.labels[keep],
                       self.calibrated[keep], self.raw[keep], self.num_layers, self.num_heads, self.reversed)

    def head_range(self, heads: int) -> "Profile":
        """The first ``heads`` heads (layer-major: every head of the first ``heads // num_heads`` layers)."""
        return Profile(self.qids, self.docnos, self.first_stage, self.labels, self.calibrated[:, :heads],
                       self.raw[:, :heads], self.num_layers, self.num_heads, self.reversed)

    @property
    def max_layer(self) -> int:
        return self.calibrated.shape[1] // self.num_heads - 1

    def lengths(self) -> np.ndarray:
        return (self.labels >= 0).sum(1)

    def head_index(self, heads: HeadSet) -> np.ndarray:
        if heads.deepest_layer > self.max_layer:
            raise ValueError(f"profile reads layers 0-{self.max_layer}; {heads} needs layer {heads.deepest_layer}")
        return np.array([layer * self.num_heads + head for layer, head in heads.heads])

    def attention(self, heads: HeadSet, slot_bias: Optional[Sequence[float]] = None) -> List[np.ndarray]:
        """Per list, the head set's scores in first-stage order, slot-corrected in prompt order."""
        weighted = np.einsum("qhn,h->qn", self.calibrated[:, self.head_index(heads)], np.asarray(heads.weights))
        out = []
        for row, n in zip(weighted, self.lengths()):
            scores = row[:n][::-1] if self.reversed else row[:n]  # prompt order
            scores = corrected(scores, slot_bias)
            out.append(scores[::-1] if self.reversed else scores)
        return out

    def lists(self, scores: Sequence[np.ndarray]) -> Dict[str, tuple]:
        """``{qid: (docnos, scores)}`` for :func:`pyterrier_headrank.metrics.ndcg10`."""
        return {q: (list(d[:len(s)]), np.asarray(s)) for q, d, s in zip(self.qids, self.docnos, scores)}

    def first_stage_scores(self) -> List[np.ndarray]:
        return [row[:n] for row, n in zip(self.first_stage, self.lengths())]

    def weighted_heads(self, max_layer: int, c: float) -> HeadSet:
        """Every head of layers ``0..max_layer`` weighted by a pairwise logistic fit on these lists."""
        n = self.lengths()
        return learn_head_weights([m[:, :k] for m, k in zip(self.calibrated.astype(np.float64), n)],
                                  [lab[:k] for lab, k in zip(self.labels, n)], self.num_heads, max_layer, c)

    def head_profile(self) -> HeadProfile:
        """Per-head discriminability and entropy on these lists (what ``fit`` selects from)."""
        n = self.lengths()
        return profile_from_masses([c[:, :m] for c, m in zip(self.calibrated.astype(np.float64), n)],
                                   [r[:, :m] for r, m in zip(self.raw.astype(np.float64), n)],
                                   [lab[:m] for lab, m in zip(self.labels, n)], list(self.qids),
                                   (self.num_layers, self.num_heads))

    def slot_bias(self, heads: HeadSet) -> tuple:
        """The per-slot correction learned on these lists (scores and labels in prompt order)."""
        flip = (lambda a: a[::-1]) if self.reversed else (lambda a: a)
        labels = [flip(lab[:m]) for lab, m in zip(self.labels, self.lengths())]
        return learn_slot_bias([flip(s) for s in self.attention(heads)], labels)


def system_scores(profiles: Sequence[Profile], heads: HeadSet, slot_bias=None,
                  fuse: Optional[float] = None) -> List[np.ndarray]:
    """A system's final scores per list: its heads in each of ``profiles`` (one per prompt order, same lists),
    averaged over the orders, then fused with the first stage when ``fuse`` is a weight."""
    per_order = [p.attention(heads, slot_bias) for p in profiles]
    scores = [np.mean(s, axis=0) for s in zip(*per_order)]
    if fuse is None:
        return scores
    return [fuse_scores(first, s, fuse) for first, s in zip(profiles[0].first_stage_scores(), scores)]


def run_frame(profile: Profile, scores: Sequence[np.ndarray], name: str) -> pd.DataFrame:
    """A PyTerrier result frame (qid, docno, score, rank) of ``scores`` over ``profile``'s lists."""
    from pyterrier_headrank.frames import add_ranks

    rows = [(q, d, float(v)) for q, docs, s in zip(profile.qids, profile.docnos, scores) for d, v in zip(docs, s)]
    frame = pd.DataFrame(rows, columns=["qid", "docno", "score"])
    return add_ranks(frame).assign(name=name)
