"""LoRA adapters on a shallow copy of the model (peft), their weights, and the layers they go on: what training
attaches and trains (:mod:`~pyterrier_headrank.training`), and what a fitted HeadRank applies at inference."""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from typing import Dict, Optional

import torch

from . import compat
from .heads import HeadSet


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
    """Fitted LoRA adapters: configuration and ``weights`` (by parameter name); :meth:`apply` gives the adapted model
    for a base model. A fitted HeadRank holds one as ``adapter_``."""

    def __init__(self, config: AdapterConfig, weights: Dict[str, torch.Tensor], model: torch.nn.Module = None,
                 base: torch.nn.Module = None):
        self.config = config
        self.weights = weights
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
        load_lora_state(adapted, self.weights)
        self._memo = (base, adapted)
        return adapted

    def __repr__(self) -> str:
        return f"Adapter(LoRA r={self.config.rank} on {list(self.config.targets)} of layers {list(self.config.layers)})"


def adapted_layers(heads: HeadSet, adapt_layers: int) -> tuple:
    """The ``adapt_layers`` deepest layers that hold selected heads (all of them when ``adapt_layers <= 0``)."""
    layers = sorted({layer for layer, _ in heads.heads})
    return tuple(layers if adapt_layers <= 0 else layers[-int(adapt_layers):])
