"""Cached training lists and their replay: the layers from the first adapted one to the deepest selected head,
run again on cached inputs at every training step."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from .. import compat
from ..attention import (
    AttentionReader,
    Capture,
    StopForward,
    active_capture,
    capturing,
    decoder_layers,
    headrank_attention,
    stop_inside,
)
from ..heads import HeadSet
from ..layout import Layout
from ..lora import load_lora_state, lora_parameters, lora_state
from ..prompt import Window
from .pairs import middle_zone


@dataclass
class CachedList:
    """One training list: the inputs of the first adapted layer, and what is needed to score it by replay."""

    qid: str
    docnos: List[str]
    labels: np.ndarray
    middle: np.ndarray
    num_passages: int
    hidden: torch.Tensor                     # the input of the first adapted layer in the frozen pass
    layer_kwargs: Dict[str, dict]            # masks, positions, rotary embeddings per attention type
    layout: Layout                           # the single-pass layout that pass read
    frozen: torch.Tensor                     # [K, n] calibrated mass of the heads below the first adapted layer
    initial: Optional[torch.Tensor] = None   # [n] scores of the starting model
    scale: float = 1.0


def _layer_types(model, first: int, last: int) -> List[str]:
    types = getattr(compat.text_config(model.config), "layer_types", None)
    return [types[l] if types else "all" for l in range(first, last + 1)]


class AttentionReplay:
    """Scores candidate lists by replaying layers ``first..deepest`` of an adapted model on cached inputs."""

    def __init__(self, model: torch.nn.Module, heads: HeadSet, first_layer: int, calibrate: bool = True,
                 pad_token_id: int = 0, learn_weights: bool = False):
        self.model = model
        self.heads = heads
        self.first = int(first_layer)
        self.deepest = heads.deepest_layer
        if not 0 <= self.first <= self.deepest:
            raise ValueError(f"HeadRank: first adapted layer {first_layer} is not within the selected layers")
        self.calibrate = calibrate
        self.reader = AttentionReader(model, pad_token_id=pad_token_id)
        self.layers = decoder_layers(model)
        self.types = _layer_types(model, self.first, self.deepest)
        self.weights = torch.nn.Parameter(torch.tensor(heads.weights, dtype=torch.float32, device=self.reader.device),
                                          requires_grad=learn_weights)
        self.learn_weights = learn_weights
        by_layer = heads.by_layer()
        self.live = {l: h for l, h in by_layer.items() if l >= self.first}
        self.live_index = {l: torch.tensor(h, device=self.reader.device) for l, h in self.live.items()}

    # ---- trainable state --------------------------------------------------------------------------------------
    def parameters(self) -> List[torch.nn.Parameter]:
        """What training updates: the LoRA weights, and the head weights when ``learn_weights``."""
        return list(lora_parameters(self.model).values()) + ([self.weights] if self.learn_weights else [])

    def state(self) -> dict:
        return {"lora": lora_state(self.model), "weights": self.weights.detach().clone()}

    def load_state(self, state: dict) -> None:
        load_lora_state(self.model, state["lora"])
        with torch.no_grad():
            self.weights.copy_(state["weights"])

    def head_set(self) -> HeadSet:
        """The head set with the current head weights."""
        name = self.heads.name + (", weights aligned" if self.learn_weights else "")
        return HeadSet(self.heads.heads, tuple(float(w) for w in self.weights.detach().cpu()), name=name)

    # ---- capture --------------------------------------------------------------------------------------------------
    def capture(self, window: Window, qid: str, docnos: Sequence[str], labels: np.ndarray) -> CachedList:
        """One frozen pass (stopped at the first adapted layer) that records that layer's inputs."""
        need = {}
        for offset, kind in enumerate(self.types):
            need.setdefault(kind, self.first + offset)  # first layer of each attention type (masks differ by type)
        stop = max(need.values())
        lower = [(l, h) for l, h in self.heads.heads if l < self.first]
        probe = lower + [(stop, 0)] if (stop, 0) not in lower else lower
        probe_set = HeadSet(tuple(probe))
        seen: Dict[str, tuple] = {}

        def hook(layer_kind):
            def record(module, args, kwargs):
                hidden = args[0] if args else kwargs["hidden_states"]
                kept = hidden.detach().clone() if layer_kind == self.types[0] else None  # the first layer's input only
                seen[layer_kind] = (kept, compat.layer_inputs(kwargs), active_capture())
            return record

        handles = [self.layers[layer].register_forward_pre_hook(hook(kind), with_kwargs=True)
                   for kind, layer in need.items()]
        try:
            with torch.no_grad():
                readout = self.reader.read([window], probe_set, calibrate=self.calibrate)
        finally:
            for handle in handles:
                handle.remove()
        n = window.num_passages
        mass = readout.passage_mass[0, :, :n]
        if self.calibrate:
            mass = mass - readout.calibration_passage_mass[0, :, :n]
        frozen = torch.zeros(len(self.heads), n, device=mass.device)
        position = {pair: i for i, pair in enumerate(probe)}
        for i, pair in enumerate(self.heads.heads):
            if pair in position and pair[0] < self.first:
                frozen[i] = mass[position[pair]].float()
        return CachedList(
            qid=str(qid), docnos=list(docnos), labels=np.asarray(labels, dtype=np.float64), middle=middle_zone(n),
            num_passages=n, hidden=seen[self.types[0]][0], layer_kwargs={k: v[1] for k, v in seen.items()},
            layout=seen[self.types[0]][2].layout, frozen=frozen)

    # ---- replay ---------------------------------------------------------------------------------------------------
    def _run_layers(self, hidden: torch.Tensor, kwargs: Dict[str, dict]) -> None:
        """Layers ``first..deepest`` on ``hidden``; the deepest one only up to its attention."""
        with stop_inside(self.deepest):
            try:
                for offset, layer in enumerate(range(self.first, self.deepest + 1)):
                    hidden = self.layers[layer](hidden, **kwargs[self.types[offset]])
            except StopForward:
                pass

    def scores(self, item: CachedList) -> torch.Tensor:
        """Scores ``[n]`` of one cached list under the current adapters (differentiable outside ``no_grad``)."""
        capture = Capture(self.live_index, item.layout, False)
        with headrank_attention(self.model), capturing(capture):
            self._run_layers(item.hidden, item.layer_kwargs)
        n = item.num_passages
        rows = []
        slot = {l: {h: j for j, h in enumerate(hs)} for l, hs in self.live.items()}
        for i, (layer, head) in enumerate(self.heads.heads):
            if layer < self.first:
                rows.append(item.frozen[i])
            else:
                mass = capture.passage_mass[layer]
                row = mass[0, slot[layer][head], :n]
                if self.calibrate:
                    row = row - mass[1, slot[layer][head], :n]
                rows.append(row.float())
        return self.weights @ torch.stack(rows)



def prepare(replay: AttentionReplay, items: Sequence[CachedList]) -> None:
    """Fill each list's starting scores and scale (standard deviation of its starting scores)."""
    with torch.no_grad():
        for item in items:
            item.initial = replay.scores(item).detach()
            std = float(item.initial.std(unbiased=False)) if item.num_passages > 1 else 0.0
            item.scale = std if std > 1e-8 else 1.0


def has_pairs(item: CachedList) -> bool:
    return len(np.unique(item.labels)) > 1
