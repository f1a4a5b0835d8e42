"""The compatibility layer over transformers and peft internals, on the versions installed here."""
import threading
import warnings

import pytest
import torch

from pyterrier_headrank import HeadRank, compat

import fit_data


def test_layer_inputs_drop_the_cache_under_either_name():
    kwargs = {"cache": 1, "past_key_values": 2, "hidden_states": 3, "attention_mask": 4, "position_ids": 5}
    assert compat.layer_inputs(kwargs) == {"attention_mask": 4, "position_ids": 5}


def test_reading_and_fitting_raise_no_warning(tiny_qwen3):
    """No FutureWarning (deprecated cache keyword), no pandas warning, nothing else from our code paths (the
    training-free heads asked for by name: without them, the one intended warning, FitAdvice, would be given)."""
    model, tokenizer = tiny_qwen3
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reranker = HeadRank(model, "zero-shot", tokenizer=tokenizer, max_passage_tokens=24)
        reranker(fit_data.results())
        reranker.fit(fit_data.results(), fit_data.qrels(), k=2, max_layer=2, epochs=1, cv_folds=2, verbose=False)
        reranker(fit_data.results())
    assert [f"{w.category.__name__}: {w.message}" for w in caught] == []


def test_attention_switch_is_reference_counted_across_threads(tiny_qwen3):
    model, _ = tiny_qwen3
    configs = compat.attention_configs(model)
    before = [c._attn_implementation for c in configs]
    inside, release = threading.Barrier(3), threading.Event()

    def hold():
        with compat.attention_implementation(configs, "eager"):
            inside.wait()
            release.wait()

    threads = [threading.Thread(target=hold) for _ in range(2)]
    for t in threads:
        t.start()
    inside.wait()
    assert all(c._attn_implementation == "eager" for c in configs)
    release.set()
    for t in threads:
        t.join()
    assert [c._attn_implementation for c in configs] == before


def test_quiet_loading_restores_transformers_logging():
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    with compat.quiet_loading(verbose=False):
        assert hf_logging.get_verbosity() == hf_logging.ERROR and not hf_logging.is_progress_bar_enabled()
    assert (hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()) == (verbosity, bars)


def test_lora_names_follow_peft(tiny_qwen3):
    from pyterrier_headrank.lora import AdapterConfig, attach_lora

    model, _ = tiny_qwen3
    adapted = attach_lora(model, AdapterConfig((1, 3), rank=2))
    names = [n for n, _ in adapted.named_parameters() if compat.is_lora_parameter(n)]
    assert names and {compat.lora_layer_index(n) for n in names} == {1, 3}
    assert all(p.dtype == torch.float32 for n, p in adapted.named_parameters() if n in names)


@pytest.mark.parametrize("module", ["transformers", "peft", "pyterrier", "torch"])
def test_installed_versions_are_inside_the_declared_range(module):
    """setup.cfg declares a tested range for each fast-moving dependency; what is installed must lie inside it."""
    import configparser
    import importlib.metadata

    from packaging.requirements import Requirement

    from conftest import ROOT

    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    requirements = {Requirement(line).name: Requirement(line) for line in
                    config["options"]["install_requires"].split("\n") if line.strip()}
    requirement = requirements[module if module != "pyterrier" else "pyterrier"]
    specifiers = str(requirement.specifier)
    assert ">" in specifiers and "<" in specifiers, f"{module} needs a lower and an upper bound: {specifiers}"
    installed = importlib.metadata.version(requirement.name).split("+")[0]
    assert requirement.specifier.contains(installed, prereleases=True), (module, installed, specifiers)
