"""The written contract: every reranker is a ListwiseReranker; one settings object drives the saved fit and the cache
key; the benchmarks use public names only."""
import ast
import copy
import dataclasses
import json
import pathlib
import re

import pytest

from pyterrier_headrank import CandidateList, HeadRank, ListwiseReranker, RankingSettings
from pyterrier_headrank.baselines import ICR, RankGPT
from pyterrier_headrank.cache import scorer_fingerprint
from pyterrier_headrank.folder import SETTINGS
from pyterrier_headrank.ranking_settings import MODEL, RUN, SCORES, ListSettings

import fit_data
from conftest import ROOT

#: another valid value of every setting of RankingSettings (a new setting must be added here, so that the test below
#: decides whether it belongs in the cache key)
OTHER_VALUE = dict(text_field="body", max_passage_tokens=16, max_query_tokens=32, dtype="float32", batch_size=3,
                   device="cpu", verbose=True, calibrate=False, max_window_tokens=2048, max_window_passages=20,
                   n_anchors=2, window_overlap=1, rescore_top=10, order="first-stage", fuse=0.5,
                   slot_bias=(0.1, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.1), compile=True)


@pytest.mark.parametrize("make", [lambda: HeadRank("qwen3-0.6b", heads="zero-shot"), lambda: ICR("qwen3-0.6b"),
                                  lambda: RankGPT("qwen3-0.6b")], ids=["HeadRank", "ICR", "RankGPT"])
def test_every_reranker_is_a_listwise_reranker_with_its_settings_as_attributes(make):
    reranker = make()
    assert isinstance(reranker, ListwiseReranker)
    assert isinstance(reranker.settings, ListSettings) and reranker._loaded is None, "nothing loads at construction"
    assert reranker.model_name == "qwen3-0.6b"
    for name in type(reranker).settings_class.names():
        assert getattr(reranker, name) == getattr(reranker.settings, name), name
    changed = copy.copy(reranker)
    changed.max_query_tokens = 7  # an attribute write replaces the settings object, so copies stay apart
    assert (changed.settings.max_query_tokens, reranker.max_query_tokens) == (7, 64)


def test_rankgpt_takes_the_list_settings_not_the_window_ones():
    rankgpt = RankGPT("qwen3-0.6b")
    assert type(rankgpt.settings) is ListSettings and not hasattr(rankgpt, "n_anchors")
    assert set(rankgpt.scoring_settings()) >= {"window_size", "stride", "max_new_tokens", "max_passage_tokens"}


def test_the_settings_object_decides_what_a_fit_saves_and_what_the_cache_keys():
    assert set(OTHER_VALUE) == set(RankingSettings.names()), "give every setting another value above"
    assert SETTINGS == RankingSettings.names(SCORES), "a saved fit records exactly the settings that decide scores"
    base = HeadRank("qwen3-0.6b", heads="zero-shot")
    key = scorer_fingerprint(base)
    roles = {f.name: f.metadata["role"] for f in dataclasses.fields(RankingSettings)}
    for name, value in OTHER_VALUE.items():
        changed = copy.copy(base)
        setattr(changed, name, value)
        assert getattr(changed, name) != getattr(base, name), name
        assert (scorer_fingerprint(changed) != key) == (roles[name] in (SCORES, MODEL)), name
    assert set(roles.values()) == {SCORES, MODEL, RUN}


def test_a_saved_folder_holds_the_scores_settings(tiny_qwen3, tmp_path):
    model, tokenizer = tiny_qwen3
    reranker = HeadRank(model, heads=[(1, 0), (2, 1)], tokenizer=tokenizer, max_passage_tokens=24, batch_size=2)
    saved = json.loads((pathlib.Path(reranker.save(tmp_path / "fit")) / "headrank.json").read_text())
    assert list(saved["settings"]) == list(RankingSettings.names(SCORES))
    assert saved["settings"]["max_passage_tokens"] == 24 and "batch_size" not in saved["settings"]


def test_transform_reads_candidate_lists(tiny_qwen3):
    """transform hands final_scores the CandidateLists' queries, texts and first-stage scores, in first-stage order."""
    model, tokenizer = tiny_qwen3
    seen = []

    class Watching(HeadRank):
        def final_scores(self, lists, first_stage, *args, **kwargs):
            seen.append((lists, first_stage))
            return super().final_scores(lists, first_stage, *args, **kwargs)

    frame = fit_data.results(["q1"])
    Watching(model, heads=[(1, 0)], tokenizer=tokenizer, max_passage_tokens=24)(frame.iloc[::-1])
    ((lists, first_stage),) = seen
    ordered = frame.sort_values("rank")
    assert lists == [(ordered["query"].iloc[0], ordered["text"].tolist())]
    assert first_stage[0].tolist() == ordered["score"].tolist()
    assert CandidateList.__module__ == "pyterrier_headrank.candidates"


def test_rankgpt_public_hooks_see_every_window(tiny_qwen3):
    model, tokenizer = tiny_qwen3
    widths, outputs = [], []

    class Watching(RankGPT):
        def generation_config(self, max_new_tokens, pad_token_id, eos_token_ids, passages):
            widths.append(passages)
            return super().generation_config(max_new_tokens, pad_token_id, eos_token_ids, passages)

        def record_output(self, query, passages, max_new_tokens, text, parsed):
            super().record_output(query, passages, max_new_tokens, text, parsed)
            outputs.append((query, passages, max_new_tokens))

    rankgpt = Watching(model, tokenizer=tokenizer, window_size=4, stride=2, max_new_tokens=3, max_passage_tokens=12)
    rankgpt.score_lists([("a query", ["one", "two", "three", "four", "five", "six"])])
    assert widths == [4, 4] and [n for _, n, _ in outputs] == [4, 4]
    assert all(budget == 3 for _, _, budget in outputs) and rankgpt.format_stats.windows == 2


def _private_uses(path: pathlib.Path):
    """``x._name`` attributes and ``from pyterrier_headrank... import _name`` in one file."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and re.match(r"^_[a-z]", node.attr):
            yield node.lineno, ast.unparse(node)
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pyterrier_headrank"):
            yield from ((node.lineno, alias.name) for alias in node.names if alias.name.startswith("_"))


def test_the_benchmarks_use_no_private_name_of_the_package():
    found = [f"{path.name}:{line}: {text}" for path in sorted((ROOT / "benchmarks").glob("*.py"))
             for line, text in _private_uses(path)]
    assert found == [], "benchmarks reach into private names; give the package a public hook instead"


def test_the_private_name_check_can_fail(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("def f(reranker):\n    return reranker._load()\nfrom pyterrier_headrank.models import _cache\n")
    assert sorted(line for line, _ in _private_uses(sample)) == [2, 3]
