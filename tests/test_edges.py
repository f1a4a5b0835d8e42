"""Edges found by trying the package as a new user would (issue 19): non-finite numbers, half-made model folders,
an output path only a write can test, help texts that tell the truth. Each case failed on the code before it."""
import inspect
import json
import math
import os
import pathlib
import shutil
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pyterrier as pt
import pytest

from pyterrier_headrank import HeadRank
from pyterrier_headrank.fusion import ScoreFusion

FOUR = pd.DataFrame({"qid": "1", "query": "what do bees make", "docno": list("abcd"),
                     "text": ["Bees make honey from nectar.", "Trains run on rails.", "Pianos have 88 keys.", ""],
                     "score": [4.0, 3.0, 2.0, 1.0]})


class Counting(HeadRank):
    """HeadRank that counts the lists it scores: an error raised "before any scoring" leaves the count at 0."""

    scored = 0

    def window_plan_scores(self, lists, desc=None):
        Counting.scored += len(lists)
        return super().window_plan_scores(lists, desc)


@pytest.fixture
def counting(smollm2):
    Counting.scored = 0
    return Counting


# ---- non-finite numbers -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan])
def test_a_non_finite_first_stage_score_is_refused_before_scoring_when_fusing(counting, bad):
    reranker = counting("smollm2-135m")  # the default fit fuses (fuse=0.1)
    assert reranker.fuse is not None
    with pytest.raises(ValueError, match=r"^Counting: fuse=0.1 fuses with the first stage's score, but 1 row\(s\) "
                                         r"have a 'score' that is not a finite number \(e.g. qid '1', docno 'a'"):
        reranker(FOUR.assign(score=[bad, 3.0, 2.0, 1.0]))
    assert Counting.scored == 0


def test_without_fusion_an_infinite_first_stage_score_only_orders_the_list(smollm2):
    out = HeadRank("smollm2-135m", fuse=None)(FOUR.assign(score=[math.inf, 3.0, 2.0, 1.0]))
    assert np.isfinite(out["score"]).all() and sorted(out["rank"]) == [0, 1, 2, 3]


@pytest.mark.parametrize("weight", [math.nan, math.inf, -math.inf, "heavy"])
def test_a_head_weight_that_is_not_a_finite_number_is_refused_at_construction(weight):
    with pytest.raises(ValueError, match=r"^HeadRank: the weight of head \(layer 16, head 1\) is .*; head weights "
                                         r"must be finite numbers$"):
        HeadRank("smollm2-135m", heads=[(16, 1, weight), (17, 2, 1.0)])


@pytest.mark.parametrize("pair", [(math.nan, 1), (1.5, 2), ("x", 0)])
def test_a_head_that_is_not_a_pair_of_whole_numbers_is_refused(pair):
    with pytest.raises(ValueError, match="^HeadRank: heads must be \\(layer, head\\) pairs of whole numbers"):
        HeadRank("smollm2-135m", heads=[pair])


@pytest.mark.parametrize("setting", ["max_passage_tokens", "max_window_tokens", "n_anchors", "rescore_top"])
def test_a_count_setting_that_is_nan_names_the_setting(setting):
    with pytest.raises(ValueError, match=f"^HeadRank: {setting}=nan must be a whole number"):
        HeadRank("smollm2-135m", heads="zero-shot", **{setting: math.nan})


@pytest.mark.parametrize("fuse", [math.nan, math.inf])
def test_a_non_finite_fusion_weight_is_refused(fuse):
    with pytest.raises(ValueError, match=r"^HeadRank: fuse=(nan|inf) must be None"):
        HeadRank("smollm2-135m", fuse=fuse)
    with pytest.raises(ValueError, match="weight must be within"):
        ScoreFusion(HeadRank("smollm2-135m", fuse=None), fuse)


@pytest.mark.parametrize("setting, value, message", [
    ("fuse", math.nan, r"^HeadRank: fuse=nan must be None"),
    ("slot_bias", [0.1, math.nan], r"^HeadRank: slot_bias must be None or at least two finite numbers"),
])
def test_a_non_finite_value_in_a_saved_folder_is_refused_on_loading(tmp_path, setting, value, message):
    folder = tmp_path / "fit"
    shutil.copytree(pathlib.Path(__import__("pyterrier_headrank").__file__).parent / "pretrained" /
                    "smollm2-135m-general", folder)
    data = json.loads((folder / "headrank.json").read_text())
    data["settings"][setting] = value
    (folder / "headrank.json").write_text(json.dumps(data))  # Python's json writes NaN, as a hand edit might
    with pytest.raises(ValueError, match=message):
        HeadRank.from_pretrained(str(folder))


def test_a_nan_head_weight_in_a_saved_folder_is_refused_on_loading(tmp_path):
    folder = tmp_path / "fit"
    shutil.copytree(pathlib.Path(__import__("pyterrier_headrank").__file__).parent / "pretrained" /
                    "smollm2-135m-general", folder)
    data = json.loads((folder / "headrank.json").read_text())
    data["heads"]["weights"][0] = math.nan
    (folder / "headrank.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="head weights must be finite numbers"):
        HeadRank.from_pretrained(str(folder))


def test_scores_that_come_out_non_finite_are_an_error_never_a_ranking(smollm2):
    class Broken(HeadRank):  # stands for a model whose pass overflows (float16) or returns NaN
        def window_scores(self, reader, windows, heads, weights=None):
            scores = super().window_scores(reader, windows, heads, weights)
            scores[..., 0] = np.nan
            return scores

    broken = Broken("smollm2-135m", fuse=None)
    with pytest.raises(ValueError, match=r"^Broken: the scores of qid '1' are not all finite \(1 of 4"):
        broken(FOUR)
    with pytest.raises(ValueError, match="^Broken: the scores of the passages are not all finite"):
        broken.rank("what do bees make", list(FOUR["text"]))


def test_score_fusion_refuses_infinite_first_stage_scores(smollm2):
    fusion = ScoreFusion(HeadRank("smollm2-135m", fuse=None), 0.5)
    with pytest.raises(ValueError, match="first stage's scores are not finite numbers"):
        fusion(FOUR.assign(score=[math.inf, 3.0, 2.0, 1.0]))


# ---- model folders ----------------------------------------------------------------------------------------------
def _folder(tmp_path, files):
    folder = tmp_path / "model"
    folder.mkdir()
    for name, text in files.items():
        (folder / name).write_text(text)
    return str(folder)


@pytest.mark.parametrize("files, problem", [
    ({"config.json": '{"model_type": "llama"}'}, "no tokenizer file in it"),
    ({"config.json": '{"model_type": "llama"}', "tokenizer.json": "{}"}, "no weights in it"),
    ({"config.json": "{not json", "tokenizer.json": "{}", "model.safetensors": ""},
     "its config.json cannot be read as JSON"),
    ({"config.json": '{"layers": 2}', "tokenizer.json": "{}", "model.safetensors": ""},
     "its config.json names no model_type"),
    ({"tokenizer.json": "{}"}, "no config.json in it"),
])
def test_a_half_made_model_folder_is_refused_at_construction(tmp_path, files, problem):
    folder = _folder(tmp_path, files)
    with pytest.raises(ValueError, match=f"^HeadRank: folder '{folder}' is not a transformers model \\({problem}"):
        HeadRank(folder, heads="zero-shot")
    from pyterrier_headrank.baselines import ICR

    with pytest.raises(ValueError, match=f"^ICR: folder '{folder}' is not a transformers model"):
        ICR(folder)


def test_a_full_model_folder_still_loads(tiny_qwen3_folder):
    HeadRank(tiny_qwen3_folder, heads="zero-shot")  # config, tokenizer and weights: accepted


# ---- the command line -------------------------------------------------------------------------------------------
def _script():
    script = shutil.which("headrank", path=os.path.dirname(sys.executable))
    if script is None:
        pytest.skip("the `headrank` console script is not installed here (pip install -e . installs it)")
    return script


def _unwritable_for_root() -> str:
    """A path that no one can create a file in, root included (a kernel file system): os.access says yes there."""
    for folder in ("/sys", "/proc"):
        if os.path.isdir(folder):
            return f"{folder}/headrank-out.trec"
    pytest.skip("no /sys or /proc here")


def _run(argv, cwd):
    started = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=cwd)
    return done, time.perf_counter() - started


def test_an_output_path_only_a_write_can_test_fails_before_any_work_and_names_o(tmp_path):
    candidates = tmp_path / "c.jsonl"
    candidates.write_text('{"qid": "1", "query": "q", "docno": "a", "text": "t"}\n')
    target = _unwritable_for_root()
    done, seconds = _run([_script(), "rerank", "--candidates", str(candidates), "-o", target], tmp_path)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [f"headrank rerank: error: -o/--output {target} cannot be written: "
                                                f"{done.stderr.split('cannot be written: ')[-1].strip()}"]
    assert seconds < 2.0, seconds  # before the model loads (that takes 20 s and more)


def test_the_run_is_written_through_a_temporary_file_that_exists_before_scoring(tmp_path):
    from pyterrier_headrank.integrations.trec_files import RunOutput

    target = tmp_path / "run.txt"
    target.write_text("old\n")
    output = RunOutput(str(target))
    temps = [p for p in tmp_path.iterdir() if p.name.startswith(".run.txt.")]
    assert len(temps) == 1 and target.read_text() == "old\n"  # claimed, the old run untouched
    output.discard()
    assert [p.name for p in tmp_path.iterdir()] == ["run.txt"]  # an abandoned run leaves nothing behind
    output = RunOutput(str(target))
    output.write(pd.DataFrame({"qid": ["1", "1"], "docno": ["a", "b"], "score": [2.0, 1.0], "rank": [0, 1]}), "t")
    assert target.read_text().splitlines()[0].split() == ["1", "Q0", "a", "1", "2.000000", "t"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.txt"]


@pytest.mark.parametrize("argv", [
    ["rerank", "--candidates", "missing.jsonl", "-o", "x.trec"],
    ["rerank", "--run", "missing.txt", "-c", "vaswani", "-o", "x.trec"],
    ["rerank", "--candidates", "c.jsonl", "--model", "no-such-model", "-o", "x.trec"],
    ["rerank", "--candidates", "c.jsonl", "--model", "half-made", "-o", "x.trec"],
    ["rerank", "--candidates", "c.jsonl", "--heads", "1-0", "-o", "x.trec"],
    ["rerank", "--candidates", "c.jsonl", "-o", "no/such/folder/x.trec"],
    ["fit", "--candidates", "c.jsonl", "--qrels", "missing.tsv", "-o", "fitted"],
    ["evaluate", "--qrels", "missing.tsv", "run.txt"],
])
def test_errors_that_need_no_model_answer_in_under_two_seconds(tmp_path, argv):
    (tmp_path / "c.jsonl").write_text('{"qid": "1", "query": "q", "docno": "a", "text": "t"}\n')
    (tmp_path / "half-made").mkdir()
    (tmp_path / "half-made" / "config.json").write_text('{"model_type": "llama"}')
    done, seconds = _run([_script(), *argv], tmp_path)
    assert done.returncode == 1 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert seconds < 2.0, (seconds, done.stderr)


def test_help_defaults_are_the_python_defaults(capsys):
    """What `headrank rerank --help` and `fit --help` say a default is equals what the code does."""
    from pyterrier_headrank.batching import MAX_GPU_BATCH
    from pyterrier_headrank.folder import read_fit
    from pyterrier_headrank.headrank import DEFAULT_PASSAGE_TOKENS
    from pyterrier_headrank.integrations.cli import DEFAULT_CUTOFF, DEFAULT_MODEL, build_parser, main
    from pyterrier_headrank.models import ALIASES
    from pyterrier_headrank.registry import default_fit_path
    from pyterrier_headrank.training.settings import FitSettings

    assert main(["rerank", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    python = inspect.signature(HeadRank).parameters
    assert python["model"].default == DEFAULT_MODEL and f"default: {DEFAULT_MODEL}" in text
    assert python["heads"].default is None and "default: the model's registered fit" in text
    assert HeadRank(DEFAULT_MODEL).default_fit is not None and HeadRank(DEFAULT_MODEL).fuse is not None
    assert python["batch_size"].default is None and f"1 on CPU; on GPU as many as the free memory holds, at most " \
        f"{MAX_GPU_BATCH}" in text
    shipped = read_fit(default_fit_path(DEFAULT_MODEL)).settings["max_passage_tokens"]
    assert f"default: the fit's, {shipped} for smollm2-135m's shipped fits; {DEFAULT_PASSAGE_TOKENS} for a model " \
           f"without a fit" in text
    assert read_fit(pathlib.Path(default_fit_path(DEFAULT_MODEL)).parent / "smollm2-135m-scifact") \
        .settings["max_passage_tokens"] == shipped
    assert python["dtype"].default == "auto" and "--dtype DTYPE auto" in text
    assert all(alias in text for alias in ALIASES)
    args = build_parser().parse_args(["rerank", "--candidates", "c", "-o", "x"])
    assert args.batch_size is None and args.cutoff == DEFAULT_CUTOFF and args.model is None
    assert main(["fit", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert f"default: HeadRank.fit's, {FitSettings().k}" in text
    assert FitSettings().max_layer is None and "default: two thirds of the depth" in text


def test_shipped_folders_leave_the_batch_size_to_the_machine():
    """A saved folder records the settings that decide scores, not ``batch_size`` (padded batches are slower on a
    CPU; a GPU plans its own), so a shipped fit runs one window at a time on a CPU."""
    from pyterrier_headrank.models import resolve_model

    root = pathlib.Path(__import__("pyterrier_headrank").__file__).parent / "pretrained"
    loaded = 0
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        saved = json.loads((folder / "headrank.json").read_text())
        assert "batch_size" not in saved["settings"], folder
        try:
            resolve_model(saved["model"])
        except ImportError:  # a model whose part packages this install lacks (the 1.5B outside its extra)
            continue
        assert HeadRank.from_pretrained(folder.name).batch_size is None
        loaded += 1
    assert loaded >= 2, "the SmolLM2 fits are always installable"


def test_saving_does_not_record_the_batch_size(tiny_qwen3, tmp_path):
    model, tokenizer = tiny_qwen3
    HeadRank(model, [(1, 0), (2, 1)], tokenizer=tokenizer, batch_size=8).save(tmp_path / "fit")
    assert "batch_size" not in json.loads((tmp_path / "fit" / "headrank.json").read_text())["settings"]
    assert HeadRank.from_pretrained(str(tmp_path / "fit"), model=model, tokenizer=tokenizer).batch_size is None


# ---- messages that start with what is wrong ---------------------------------------------------------------------
def test_a_missing_column_error_starts_with_the_missing_column():
    with pytest.raises(pt.validate.InputValidationError) as caught:
        HeadRank("smollm2-135m")(FOUR.drop(columns=["text"]))
    assert str(caught.value).startswith("HeadRank: the input lacks the column(s) 'text' (it has 'qid', 'query', "
                                        "'docno', 'score'). HeadRank reads passage text from the 'text' column")


def test_an_empty_passage_scores_zero_attention_and_under_fusion_ranks_last(smollm2):
    attention = HeadRank("smollm2-135m", fuse=None)(FOUR).set_index("docno")["score"]
    assert attention["d"] == 0.0  # no tokens, no attention (README "Caveats")
    fused = HeadRank("smollm2-135m")(FOUR).set_index("docno")
    assert fused.loc["d", "score"] != 0.0 and fused.loc["d", "rank"] == 3


def test_lone_surrogates_are_replaced_and_a_negative_top_k_is_refused(tiny_qwen3):
    """A lone UTF-16 surrogate (what a broken JSON escape leaves in a str) cannot be tokenized: it becomes U+FFFD in
    queries and passages, in ``rank`` and in ``transform`` alike, instead of a TypeError from the tokenizer."""
    model, tokenizer = tiny_qwen3
    reranker = HeadRank(model, tokenizer=tokenizer, heads="zero-shot", max_passage_tokens=16)
    hits = reranker.rank("bees \ud800", ["honey \udfff", "rails"], return_documents=True)
    assert sorted(h["text"] for h in hits) == ["honey \ufffd", "rails"]
    assert [h["score"] for h in hits] == pytest.approx(
        [h["score"] for h in reranker.rank("bees \ufffd", ["honey \ufffd", "rails"])])
    frame = pd.DataFrame({"qid": "1", "query": "bees \ud800", "docno": ["a", "b"], "text": ["honey \udfff", "rails"]},
                         dtype=object)  # pandas' Arrow strings cannot hold a lone surrogate; object columns can
    assert np.isfinite(reranker(frame).score).all()
    with pytest.raises(ValueError, match=r"HeadRank.rank: top_k=-1 must be None"):
        reranker.rank("bees", ["a", "b"], top_k=-1)
    assert reranker.rank("bees", ["a", "b"], top_k=0) == []
