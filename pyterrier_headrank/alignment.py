"""Preference alignment in attention space: preference pairs, the loss, LoRA adapters, cheap training.

What is trained, and how (the design :meth:`HeadRank.fit` uses):

* **Score.** A passage's score is the weighted sum over the selected heads of the calibrated attention mass that the
  query pays to it (exactly what :class:`HeadRank` computes at inference).
* **Loss.** ``L = pairwise + Omega``. ``pairwise`` is a Bradley-Terry (logistic) loss over preference pairs,
  ``-log sigmoid(beta * (s_w - s_l) / scale)``, optionally relative to the frozen starting model (DPO style:
  ``(s_w - s_l) - (s0_w - s0_l)``). ``Omega(s) = gamma * H(p) - eta * Var(s_mid)`` with ``p = softmax(s / scale)``
  over the candidate list and ``s_mid`` the (scaled) scores of the first stage's middle zone (see
  :func:`middle_zone`). ``scale`` is the standard deviation of the list's scores under the starting model, so that
  ``beta``, ``gamma`` and ``eta`` are unit-free and mean the same for every model and list length.
* **Pairs** (:func:`preference_pairs`): adjacent relevance levels present in the list (grade g over the next lower
  grade present; binary: relevant over irrelevant), plus each relevant passage over the ``hard_negatives``
  highest-scored passages of the lowest grade; hardest first (most wrongly ordered, then nearest ties), capped.
* **Parameters.** Optionally the head weights (``learn_weights``: how much each selected head counts, a linear
  combination of the heads' scores saved in the head set), and peft LoRA adapters on the attention projections
  (``q_proj``, ``k_proj``) of the ``adapt_layers`` deepest layers that hold selected heads. The base weights stay
  frozen and are shared with the loaded model (the adapted model is a shallow copy, so a fitted reranker does not
  change other rerankers using the same weights).
* **Cheap training on cached states.** Nothing below the first adapted layer changes, so its input hidden states
  (and the masks and rotary embeddings the decoder hands every layer) are captured once per training list with a
  forward pre-hook (``with_kwargs=True``) during one frozen pass, and every training step replays only the layers
  from the first adapted layer to the deepest selected one (the last one only up to its attention), with the same
  single-pass layout (:mod:`.layout`) and the same attention reading as inference. Scores of the selected heads
  below the first adapted layer are constants taken from that pass. Nothing above the deepest selected layer runs,
  in training or at inference, and the replayed scores equal those of the adapted model's normal pass.
"""
from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from . import compat
from .attention import (
    AttentionReader,
    Capture,
    StopForward,
    active_capture,
    capturing,
    decoder_layers,
    headrank_attention,
    stop_inside,
)
from .heads import HeadSet
from .layout import Layout
from .prompt import Window

# ----------------------------------------------------------------------------------------------------------------
# pairs, middle zone, losses
# ----------------------------------------------------------------------------------------------------------------


def middle_zone(n: int) -> np.ndarray:
    """Mask of the middle of a first-stage list of ``n``: positions ``ceil(n/4) .. n - ceil(n/4) - 1``.

    The same definition as :func:`pyterrier_headrank.metrics.selectivity` (for n = 20: ranks 6 to 15).
    """
    quarter = math.ceil(n / 4)
    positions = np.arange(n)
    return (positions >= quarter) & (positions < n - quarter) if n >= 3 else np.zeros(n, dtype=bool)


def preference_pairs(labels: Sequence[float], scores: Optional[Sequence[float]] = None,
                     max_pairs: Optional[int] = None, hard_negatives: int = 0) -> np.ndarray:
    """Preference pairs ``[P, 2]`` (winner index, loser index) for one candidate list.

    * Adjacent levels: for each pair of consecutive relevance grades *present in the list* (say 0 < 1 < 3), every
      passage of the higher grade over every passage of the lower one (1 over 0, 3 over 1). Binary qrels: every
      relevant passage over every irrelevant one. Unjudged passages should be given grade 0.
    * Hard negatives: each passage above the lowest grade also over the ``hard_negatives`` highest-scored passages of
      the lowest grade (needs ``scores``; adds pairs only for lists with three or more grades).
    * Order: hardest first: ascending ``scores[w] - scores[l]`` (wrongly ordered pairs, then near ties), ties by
      index; without ``scores``, by index. At most ``max_pairs`` pairs are kept.
    """
    labels = np.asarray(labels, dtype=np.float64)
    levels = np.unique(labels)
    pairs = set()
    for low, high in zip(levels[:-1], levels[1:]):
        for w in np.flatnonzero(labels == high):
            for l in np.flatnonzero(labels == low):
                pairs.add((int(w), int(l)))
    if hard_negatives > 0 and scores is not None and len(levels) > 1:
        scores_arr = np.asarray(scores, dtype=np.float64)
        negatives = np.flatnonzero(labels == levels[0])
        hardest = negatives[np.argsort(-scores_arr[negatives], kind="stable")[:hard_negatives]]
        for w in np.flatnonzero(labels > levels[0]):
            for l in hardest:
                pairs.add((int(w), int(l)))
    if not pairs:
        return np.zeros((0, 2), dtype=np.int64)
    ordered = sorted(pairs)
    if scores is not None:
        scores_arr = np.asarray(scores, dtype=np.float64)
        ordered.sort(key=lambda p: scores_arr[p[0]] - scores_arr[p[1]])  # stable: index order among equal margins
    if max_pairs is not None:
        ordered = ordered[: int(max_pairs)]
    return np.asarray(ordered, dtype=np.int64)


def pairwise_loss(scores: torch.Tensor, pairs: np.ndarray, beta: float = 1.0, scale: float = 1.0,
                  reference: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Bradley-Terry loss ``mean(-log sigmoid(beta * margin / scale))`` over ``pairs``; 0 without pairs.

    ``margin = s_w - s_l``, or with ``reference`` (the frozen model's scores) ``(s_w - s_l) - (r_w - r_l)`` (DPO).
    """
    if len(pairs) == 0:
        return scores.sum() * 0.0
    w = torch.as_tensor(pairs[:, 0], device=scores.device)
    l = torch.as_tensor(pairs[:, 1], device=scores.device)
    margin = scores[w] - scores[l]
    if reference is not None:
        margin = margin - (reference[w] - reference[l]).detach()
    return -F.logsigmoid(beta * margin / scale).mean()


def regulariser(scores: torch.Tensor, middle: np.ndarray, gamma: float = 0.01, eta: float = 0.01,
                scale: float = 1.0) -> torch.Tensor:
    """``Omega(s) = gamma * H(softmax(s / scale)) - eta * Var(s_mid / scale)`` (population variance).

    The entropy term rewards a decided list (attention concentrated on few passages); the variance term rewards
    spreading the first stage's middle zone apart, where a reranker has the most to gain.
    """
    z = scores / scale
    log_p = torch.log_softmax(z, dim=0)
    entropy = -(log_p.exp() * log_p).sum()
    mid = torch.as_tensor(np.flatnonzero(middle), device=scores.device)
    variance = z[mid].var(unbiased=False) if len(mid) > 1 else z.sum() * 0.0
    return gamma * entropy - eta * variance


# ----------------------------------------------------------------------------------------------------------------
# LoRA adapters on a shallow copy of the model
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AdapterConfig:
    """Where the LoRA adapters go and their shape (saved as JSON beside the weights)."""

    layers: tuple
    rank: int = 8
    alpha: float = 16.0
    targets: tuple = ("q_proj", "k_proj")
    dropout: float = 0.0

    def to_dict(self) -> dict:
        data = asdict(self)
        data["layers"], data["targets"] = list(self.layers), list(self.targets)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "AdapterConfig":
        try:
            return cls(tuple(int(l) for l in data["layers"]), int(data["rank"]), float(data["alpha"]),
                       tuple(data["targets"]), float(data.get("dropout", 0.0)))
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"HeadRank: not an adapter configuration ({err})") from err


def shallow_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``model`` with new module objects whose frozen parameters share storage with the original.

    Adapters injected into the copy leave the original (which other rerankers may share) untouched; memory is not
    duplicated. The copy's parameters do not require gradients.
    """
    memo = {}
    for p in model.parameters():
        memo[id(p)] = torch.nn.Parameter(p.data, requires_grad=False)
    for b in model.buffers():
        memo[id(b)] = b
    return copy.deepcopy(model, memo)


def attach_lora(model: torch.nn.Module, config: AdapterConfig, seed: int = 0) -> torch.nn.Module:
    """A shallow copy of ``model`` with peft LoRA adapters (``B = 0``: it starts equal to ``model``)."""
    try:
        from peft import LoraConfig, inject_adapter_in_model
    except ImportError as err:
        raise ImportError("HeadRank: alignment needs peft (`pip install peft`)") from err
    adapted = shallow_copy(model)
    lora = LoraConfig(r=config.rank, lora_alpha=config.alpha, lora_dropout=config.dropout,
                      target_modules=list(config.targets), layers_to_transform=list(config.layers),
                      layers_pattern="layers", bias="none")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            adapted = inject_adapter_in_model(lora, adapted)
        except ValueError as err:
            raise ValueError(f"HeadRank: cannot put LoRA adapters on {list(config.targets)} of layers "
                             f"{list(config.layers)} of {type(model).__name__}: {err}") from err
    for name, p in adapted.named_parameters():
        p.requires_grad_(compat.is_lora_parameter(name))
    adapted.eval()
    found = {compat.lora_layer_index(n) for n, _ in adapted.named_parameters() if compat.is_lora_parameter(n)}
    if found != set(config.layers):
        raise ValueError(f"HeadRank: LoRA adapters landed on layers {sorted(found)}, expected {list(config.layers)}")
    return adapted


def lora_parameters(model: torch.nn.Module) -> Dict[str, torch.nn.Parameter]:
    return {name: p for name, p in model.named_parameters() if compat.is_lora_parameter(name)}


def lora_state(model: torch.nn.Module) -> Dict[str, torch.Tensor]:
    """The adapter weights (a copy), keyed by parameter name."""
    return {name: p.detach().clone().contiguous() for name, p in lora_parameters(model).items()}


def load_lora_state(model: torch.nn.Module, state: Dict[str, torch.Tensor]) -> None:
    """Copy adapter weights in; every adapter parameter must be given, with its shape."""
    params = lora_parameters(model)
    missing, unexpected = sorted(set(params) - set(state)), sorted(set(state) - set(params))
    if missing or unexpected:
        raise ValueError(f"HeadRank: adapter weights do not fit this model (missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]})")
    with torch.no_grad():
        for name, p in params.items():
            if tuple(state[name].shape) != tuple(p.shape):
                raise ValueError(f"HeadRank: adapter weight {name} has shape {tuple(state[name].shape)}, "
                                 f"the model needs {tuple(p.shape)}")
            p.copy_(state[name].to(p))


class Adapter:
    """Fitted adapters: configuration and weights; :meth:`apply` gives the adapted model for a base model."""

    def __init__(self, config: AdapterConfig, state: Dict[str, torch.Tensor], model: torch.nn.Module = None,
                 base: torch.nn.Module = None):
        self.config = config
        self.state = state
        self._memo = (base, model) if model is not None else None

    def __getstate__(self) -> dict:
        """Pickled as configuration and weights only; the adapted model is rebuilt where it is used."""
        state = self.__dict__.copy()
        state["_memo"] = None
        return state

    @property
    def base_model(self) -> Optional[torch.nn.Module]:
        """The unadapted model this adapter was last applied to (``None`` before the first :meth:`apply`)."""
        return self._memo[0] if self._memo is not None else None

    def apply(self, base: torch.nn.Module) -> torch.nn.Module:
        if self._memo is not None and self._memo[0] is base:
            return self._memo[1]
        adapted = attach_lora(base, self.config)
        load_lora_state(adapted, self.state)
        self._memo = (base, adapted)
        return adapted

    def __repr__(self) -> str:
        return f"Adapter(LoRA r={self.config.rank} on {list(self.config.targets)} of layers {list(self.config.layers)})"


def adapted_layers(heads: HeadSet, adapt_layers: int) -> tuple:
    """The ``adapt_layers`` deepest layers that hold selected heads (all of them when ``adapt_layers <= 0``)."""
    layers = sorted({layer for layer, _ in heads.heads})
    return tuple(layers if adapt_layers <= 0 else layers[-int(adapt_layers):])


# ----------------------------------------------------------------------------------------------------------------
# cached inputs and replay
# ----------------------------------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------------------------------
# training
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class AlignSettings:
    """Hyper-parameters of alignment (see the module docstring for what each term does)."""

    epochs: int = 4
    lr: float = 1e-3
    weight_decay: float = 0.0
    beta: float = 1.0
    gamma: float = 0.01
    eta: float = 0.01
    reference: bool = False
    max_pairs: int = 32
    hard_negatives: int = 3
    patience: int = 2
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


def prepare(replay: AttentionReplay, items: Sequence[CachedList]) -> None:
    """Fill each list's starting scores and scale (standard deviation of its starting scores)."""
    with torch.no_grad():
        for item in items:
            item.initial = replay.scores(item).detach()
            std = float(item.initial.std(unbiased=False)) if item.num_passages > 1 else 0.0
            item.scale = std if std > 1e-8 else 1.0


def has_pairs(item: CachedList) -> bool:
    return len(np.unique(item.labels)) > 1


def train_adapters(replay: AttentionReplay, train: Sequence[CachedList], settings: AlignSettings,
                   evaluate=None, verbose: bool = True, desc: str = "HeadRank alignment") -> AlignResult:
    """Train the adapters of ``replay.model`` on ``train`` for up to ``settings.epochs`` epochs.

    ``evaluate(replay) -> float`` (higher is better; validation nDCG@10) is called before training and after every
    epoch; the best epoch's adapters are kept and training stops after ``patience`` epochs without improvement.
    Without ``evaluate``, all epochs run and the last adapters are kept. Trained: ``replay.parameters()``. Lists
    without two relevance levels give no pairs and are left out.
    """
    import time

    import pyterrier as pt

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
