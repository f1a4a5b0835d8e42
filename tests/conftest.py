"""Shared fixtures: where ../shared is, tiny random decoders with real tokenizers, and the real SmolLM2."""
import contextlib
import json
import os
import pathlib
import secrets
import tempfile

import pytest
import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED = pathlib.Path(os.environ.setdefault("HEADRANK_SHARED", str(ROOT.parent / "shared")))  # the package reads it
QWEN3_TOKENIZER = SHARED / "models" / "qwen3-tokenizer"

# nothing in the tests may download or write to the home folder; set before anything imports ir_datasets
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
_SCRATCH = pathlib.Path(tempfile.mkdtemp(prefix="headrank-tests-"))
os.environ.setdefault("IR_DATASETS_HOME", str(_SCRATCH / "ir_datasets"))
os.environ.setdefault("HEADRANK_CACHE", str(_SCRATCH / "cache"))


def need(path: pathlib.Path):
    if not path.exists():
        pytest.skip(f"{path} is not available (set HEADRANK_SHARED to the shared folder)")
    return path


@pytest.fixture(scope="session")
def qwen3_tokenizer():
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(need(QWEN3_TOKENIZER))


def tiny_decoder(kind: str, seed: int = 0):
    """A small random decoder of a stock architecture (float32, SDPA)."""
    from transformers import AutoModelForCausalLM, Gemma3TextConfig, LlamaConfig, Qwen2Config, Qwen3Config
    common = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=16, vocab_size=151936, max_position_embeddings=40960)
    if kind == "qwen3":
        config = json.loads((need(QWEN3_TOKENIZER) / "config.json").read_text())
        config.update(common)
        config = Qwen3Config(**config)
    elif kind == "qwen2":
        config = Qwen2Config(**common)
    elif kind == "llama":
        config = LlamaConfig(**common)
    elif kind == "gemma3":  # sliding-window layers with a short window, so that it matters
        config = Gemma3TextConfig(**common, sliding_window=48, query_pre_attn_scalar=16)
    else:
        raise ValueError(kind)
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config, attn_implementation="sdpa", dtype=torch.float32).eval()


@pytest.fixture(scope="session")
def tiny_qwen3(qwen3_tokenizer):
    return tiny_decoder("qwen3"), qwen3_tokenizer


@pytest.fixture(scope="session")
def tiny_qwen3_folder(tiny_qwen3, tmp_path_factory):
    """The tiny Qwen3 saved to a folder: a model given by path, as the CLI and parallel workers load it."""
    model, tokenizer = tiny_qwen3
    folder = tmp_path_factory.mktemp("tiny-qwen3")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="session")
def smollm2():
    pytest.importorskip("gguf")
    from pyterrier_headrank.models import load_model
    try:
        return load_model("smollm2-135m", device="cpu")
    except ImportError as err:
        pytest.skip(str(err))


#: one login token for every local Ray cluster of the test session: Ray keeps the first token it read in the process,
#: so a second cluster started with another token fails to start ("InvalidAuthToken")
_RAY_TOKEN = secrets.token_hex(32)


@contextlib.contextmanager
def local_ray(*imports: str):
    """A local two-CPU Ray cluster, shut down afterwards; the test skips where Ray (or a module of ``imports``, such
    as ``ray.serve``) cannot be imported.

    Ray 2.60 writes a new login token to ~/.ray/auth_token when it starts a cluster; giving it one in RAY_AUTH_TOKEN
    keeps token authentication on without writing to the home folder (its processes inherit the variable). Several
    clusters in one session (tests/test_parallel.py, then tests/test_serve.py) share :data:`_RAY_TOKEN`.
    """
    import importlib

    try:
        import ray
        for name in imports:
            importlib.import_module(name)
    except ImportError as err:
        pytest.skip(f"Ray cannot be imported ({err}); install it with: pip install 'pyterrier-headrank[dev]'")
    saved = {name: os.environ.get(name) for name in ("RAY_AUTH_TOKEN", "RAY_AUTH_MODE")}
    if saved["RAY_AUTH_TOKEN"] is None and saved["RAY_AUTH_MODE"] is None:
        os.environ["RAY_AUTH_TOKEN"] = _RAY_TOKEN
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value

