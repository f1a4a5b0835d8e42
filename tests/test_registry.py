"""The registry of shipped fits: which fit ``HeadRank(model)`` uses, offline, and how the caller overrides it."""
import socket
import warnings

import pytest

from pyterrier_headrank import HeadRank, HeadSet
from pyterrier_headrank.folder import read_fit
from pyterrier_headrank.registry import PRETRAINED, FitAdvice, default_fit_path, register_default

import fit_data


def test_the_default_model_uses_its_shipped_general_fit_offline(monkeypatch):
    def no_network(*args, **kwargs):
        raise OSError("network used")
    monkeypatch.setattr(socket, "socket", no_network)
    shipped = read_fit(PRETRAINED / "smollm2-135m-general")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a registered fit gives no advice to fit
        reranker = HeadRank("smollm2-135m")
    assert default_fit_path("smollm2-135m") == PRETRAINED / "smollm2-135m-general"
    assert reranker.default_fit == str(PRETRAINED / "smollm2-135m-general")
    assert reranker.heads == shipped.heads
    for name in ("order", "fuse", "slot_bias", "max_passage_tokens"):
        assert getattr(reranker, name) == shipped.settings[name], name
    assert reranker.settings_from_default_fit == ("fuse", "slot_bias")
    assert "default fit smollm2-135m-general" in repr(reranker)


def test_the_callers_settings_win_over_the_shipped_fit():
    reranker = HeadRank("smollm2-135m", fuse=None, slot_bias=None, order="averaged", max_passage_tokens=100)
    assert (reranker.fuse, reranker.slot_bias, reranker.order, reranker.max_passage_tokens) == \
        (None, None, "averaged", 100)
    assert reranker.settings_from_default_fit == ()
    assert reranker.heads == read_fit(PRETRAINED / "smollm2-135m-general").heads  # heads not given: still the fit's


def test_zero_shot_is_the_explicit_training_free_choice_and_is_quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        reranker = HeadRank("smollm2-135m", heads="zero-shot")
    assert reranker.heads is None and reranker.default_fit is None
    assert (reranker.fuse, reranker.slot_bias, reranker.max_passage_tokens) == (None, None, 128)
    assert "zero-shot heads" in repr(reranker)


def test_a_model_without_a_fit_warns_once_with_the_command_to_fit():
    name = "example-org/a-model-nobody-fitted"
    with pytest.warns(FitAdvice, match="headrank fit --model example-org/a-model-nobody-fitted"):
        first = HeadRank(name)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        HeadRank(name)  # once per model and process
    assert first.heads is None and first.default_fit is None


def test_a_fit_registered_at_run_time_becomes_that_models_default(tmp_path):
    name = "example-org/registered-at-run-time"
    with pytest.raises(FileNotFoundError):
        register_default(name, tmp_path / "no-such-fit")  # a bad folder fails at registration
    register_default(name, "smollm2-135m-scifact")
    try:
        reranker = HeadRank(name)
        assert reranker.heads == read_fit(PRETRAINED / "smollm2-135m-scifact").heads
        assert reranker.adapter_.config is not None  # the fit's LoRA adapter comes with it
        assert reranker.max_passage_tokens == 64
    finally:
        register_default(name, None)
    assert default_fit_path(name) is None


def test_fitting_replaces_what_the_registered_fit_set_but_keeps_the_callers_settings(tiny_qwen3_folder, tmp_path):
    folder = str(tiny_qwen3_folder)
    base = HeadRank(folder, heads=[(0, 0), (1, 1)], fuse=0.4, slot_bias=[0.1] * 20, order="reversed",
                    max_passage_tokens=24)
    base.save(tmp_path / "fit")
    register_default(folder, tmp_path / "fit")
    try:
        defaulted = HeadRank(folder)
        assert (defaulted.fuse, defaulted.order, defaulted.heads) == (0.4, "reversed", HeadSet(((0, 0), (1, 1))))
        defaulted.fit(fit_data.results(), fit_data.qrels(), k=2, max_layer=1, align=False, verbose=False)
        assert (defaulted.fuse, defaulted.slot_bias, defaulted.default_fit) == (None, None, None)
        assert defaulted.order == "reversed"  # fit trains in the order it was given
        kept = HeadRank(folder, fuse=0.7)
        kept.fit(fit_data.results(), fit_data.qrels(), k=2, max_layer=1, align=False, verbose=False)
        assert kept.fuse == 0.7
    finally:
        register_default(folder, None)


def test_a_folder_saved_before_the_order_setting_loads_in_first_stage_order(tiny_qwen3_folder, tmp_path):
    """Old folders have no order, fuse or slot_bias: they were fitted in first-stage order, without either; the
    training-free default order (reversed) must not leak into them."""
    import json

    assert HeadRank.from_pretrained("smollm2-135m-scifact").order == "first-stage"  # shipped before the setting
    HeadRank(tiny_qwen3_folder, heads=[(0, 0)], order="reversed", fuse=0.3).save(tmp_path / "old")
    settings_file = tmp_path / "old" / "headrank.json"
    data = json.loads(settings_file.read_text())
    for name in ("order", "fuse", "slot_bias"):
        del data["settings"][name]
    settings_file.write_text(json.dumps(data))
    loaded = HeadRank.from_pretrained(tmp_path / "old")
    assert (loaded.order, loaded.fuse, loaded.slot_bias) == ("first-stage", None, None)


def test_a_registered_fit_is_parsed_once_until_its_folder_changes(tmp_path):
    import os
    import shutil

    from pyterrier_headrank.folder import read_fit_once

    folder = tmp_path / "fit"
    shutil.copytree(PRETRAINED / "smollm2-135m-general", folder)
    first = read_fit_once(folder)
    assert read_fit_once(folder) is first  # remembered: HeadRank(model) does not parse the folder again
    summary = folder / "training.json"
    os.utime(summary, ns=(summary.stat().st_atime_ns, summary.stat().st_mtime_ns + 10**9))  # rewritten
    again = read_fit_once(folder)
    assert again is not first and again.heads == first.heads
