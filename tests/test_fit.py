"""HeadRank as a PyTerrier Estimator: fitting alone and inside a pipeline, binary qrels, settings, fusion."""
import numpy as np
import pandas as pd
import pyterrier as pt
import pytest

from pyterrier_headrank import HeadRank
from pyterrier_headrank.fusion import ScoreFusion, fuse, fusion_weight
from pyterrier_headrank.training.lists import graded_lists
from pyterrier_headrank.training.settings import FitSettings

import fit_data


def _reranker(tiny, **kw):
    model, tokenizer = tiny
    return HeadRank(model, tokenizer=tokenizer, max_passage_tokens=24, **kw)


def test_is_an_estimator_and_fits_inside_a_pipeline(tiny_qwen3):
    direct = _reranker(tiny_qwen3).fit(fit_data.results(), fit_data.qrels(), align=False, k=2, max_layer=2,
                                       verbose=False)
    reranker = _reranker(tiny_qwen3)
    assert isinstance(reranker, pt.Estimator)
    reranker.fit_settings = FitSettings(align=False, k=2, max_layer=2, verbose=False)
    first_stage = pt.Transformer.from_df(fit_data.results())   # stands in for `bm25 % 20 >> text_loader`
    pipeline = first_stage >> reranker
    pipeline.fit(fit_data.topics(["q1", "q2", "q3", "q4"]), fit_data.qrels(),
                 fit_data.topics(["q5", "q6"]), fit_data.qrels())
    summary = reranker.fit_summary_
    assert summary["train"]["queries"] == 4 and summary["valid"]["queries"] == 2  # the pipeline ran the first stage
    assert 0.0 <= summary["valid_ndcg10"] <= 1.0
    assert len(reranker.heads) == 2
    out = pipeline(fit_data.topics())
    assert set(out.qid) == set(fit_data.PASSAGES) and "score" in out
    assert direct.heads != _reranker(tiny_qwen3).head_set  # selection moved away from the zero-shot heads


def test_topics_alone_are_refused(tiny_qwen3):
    with pytest.raises(ValueError, match="HeadRank.fit needs candidate lists"):
        _reranker(tiny_qwen3).fit(fit_data.topics(), fit_data.qrels(), verbose=False)
    with pytest.raises(ValueError, match="qid, docno, label"):
        _reranker(tiny_qwen3).fit(fit_data.results(), fit_data.qrels().rename(columns={"label": "rel"}))
    with pytest.raises(TypeError, match="unknown setting"):
        _reranker(tiny_qwen3).fit(fit_data.results(), fit_data.qrels(), epochz=3)
    with pytest.raises(ValueError, match="validation qrels"):
        _reranker(tiny_qwen3).fit(fit_data.results(), fit_data.qrels(), fit_data.results(), None, verbose=False)


def test_graded_lists_grade_unjudged_as_zero_and_keep_first_stage_order():
    shuffled = fit_data.results(["q1"]).sample(frac=1.0, random_state=0)
    (item,) = graded_lists(shuffled, fit_data.qrels())
    assert item.docnos == [f"q1-d{i}" for i in range(6)]
    assert item.labels.tolist() == [3, 0, 0, 2, 0, 1]
    (binary,) = graded_lists(shuffled, fit_data.qrels(graded=False))
    assert binary.labels.tolist() == [1, 0, 0, 1, 0, 0]


def test_binary_qrels_and_cross_fitting(tiny_qwen3):
    reranker = _reranker(tiny_qwen3).fit(fit_data.results(), fit_data.qrels(graded=False), k=2, max_layer=3,
                                         epochs=2, cv_folds=2, lr=2e-2, verbose=False)
    info = reranker.fit_summary_["alignment"]
    assert info["chosen_by"] == "2-fold cross-fitting"
    assert len(info["cv_mean_ndcg10_by_epoch"]) == 3          # epochs 0, 1, 2
    chosen = int(np.argmax(info["cv_mean_ndcg10_by_epoch"]))
    assert info["history"][-1]["epoch"] == chosen
    assert reranker.fit_summary_["train"]["grades_seen"] == [0.0, 1.0]


def test_fusion_weight_and_transformer():
    first = fit_data.results()
    # a "reranker" that reverses the first stage: fusion weight 1 gives back the first stage's order
    reranked = first.assign(score=-first["score"])
    same = fuse(first, reranked, 1.0)
    assert same.groupby("qid").docno.apply(list).to_dict() == first.groupby("qid").docno.apply(list).to_dict()
    flipped = fuse(first, reranked, 0.0)
    assert flipped.groupby("qid").docno.apply(list)["q1"] == [f"q1-d{i}" for i in reversed(range(6))]
    weight, table = fusion_weight(first, reranked, fit_data.qrels())
    assert weight >= 0.5 and len(table) == 11     # the first stage orders these lists better than their reverse
    with pytest.raises(ValueError, match="HeadRank fusion"):
        ScoreFusion(pt.Transformer.identity(), 1.5)
    flip = pt.apply.generic(lambda df: df.assign(score=-df["score"]))
    out = ScoreFusion(flip, 0.0)(first)
    assert out.groupby("qid").docno.apply(list)["q2"][0] == "q2-d5"


def test_pairwise_weighting_weights_every_head_of_the_allowed_layers_and_saves_them(tiny_qwen3, tmp_path):
    from pyterrier_headrank.head_weights import learn_head_weights
    from pyterrier_headrank.selection import read_all_heads

    reranker = _reranker(tiny_qwen3, order="first-stage").fit(
        fit_data.results(), fit_data.qrels(), align=False, weighting="pairwise", c=0.5, max_layer=1, verbose=False)
    num_heads = reranker.engine().reader.num_heads
    assert reranker.heads.heads == tuple((l, h) for l in range(2) for h in range(num_heads))
    assert reranker.heads.deepest_layer == 1 and len(set(reranker.heads.weights)) > 1
    assert reranker.fit_summary_["selection"]["weighting"] == "pairwise"
    # the weights are those of the pairwise fit on the same masses, read by the same pass
    lists = graded_lists(fit_data.results(), fit_data.qrels())
    windows = [reranker.windows(v.query, v.texts)[1][0] for v in lists]  # one window each, first-stage order
    calibrated, _ = read_all_heads(reranker.engine().reader, windows, 1, verbose=False)
    want = learn_head_weights(calibrated, [v.labels for v in lists], num_heads, 1, 0.5)
    np.testing.assert_allclose(reranker.heads.weights, want.weights, rtol=1e-6, atol=1e-9)
    reranker.save(tmp_path / "fit")
    assert HeadRank.from_pretrained(tmp_path / "fit", model=tiny_qwen3[0], tokenizer=tiny_qwen3[1]).heads.weights \
        == reranker.heads.weights


@pytest.mark.parametrize("setting, message", [({"weighting": "weights"}, "weighting='weights' must be"),
                                              ({"c": 0.0}, "c=0.0 .* must be a positive number"),
                                              ({"c": float("nan")}, "must be a positive number"),
                                              ({"k": 2.5}, "k=2.5 must be a whole number"),
                                              ({"select_queries": -1}, "select_queries=-1 must be >= 1"),
                                              ({"epochs": float("nan")}, "epochs=nan must be a whole number")])
def test_bad_weighting_settings_are_refused_before_any_pass(tiny_qwen3, setting, message):
    with pytest.raises(ValueError, match=message):
        _reranker(tiny_qwen3).fit(fit_data.results(), fit_data.qrels(), align=False, verbose=False, **setting)


def test_fusion_pairs_rows_by_qid_and_docno_for_one_query_none_or_ambiguous_ones():
    """One query and an empty frame fuse (no pandas shape errors); the input's qid values and types come back; a
    (qid, docno) present twice on either side is refused by name rather than multiplied into extra rows."""
    first = pd.DataFrame({"qid": [7, 7, 7], "docno": ["a", "b", "c"], "score": [3.0, 2.0, 1.0]})
    reranked = first.assign(score=[0.0, 1.0, 5.0])
    one = ScoreFusion(pt.apply.generic(lambda df: df.assign(score=[0.0, 1.0, 5.0])), 0.0)(first)
    assert one.docno.tolist() == ["c", "b", "a"] and one["rank"].tolist() == [0, 1, 2]
    assert one.qid.tolist() == [7, 7, 7] and one.qid.dtype == first.qid.dtype
    half = fuse(first, reranked, 0.5)
    assert len(half) == 3 and np.isfinite(half.score).all()
    empty = fuse(first.iloc[:0], reranked.iloc[:0], 0.5)
    assert empty.empty and {"qid", "docno", "score", "rank"} <= set(empty.columns)
    twice = pd.concat([first, first.iloc[[0]]], ignore_index=True)
    with pytest.raises(ValueError, match="HeadRank fusion: the first stage's results have qid '7', docno 'a' more"):
        fuse(twice, reranked, 0.5)
    with pytest.raises(ValueError, match="HeadRank fusion: the reranker's results have qid '7', docno 'a' more"):
        fuse(first, twice.assign(score=1.0), 0.5)
    with pytest.raises(ValueError, match="more than once"):
        fusion_weight(twice, reranked, pd.DataFrame({"qid": ["7"], "docno": ["a"], "label": [1]}))
    with pytest.raises(ValueError, match=r"1 reranked document\(s\) are not in the first-stage results"):
        fuse(first.iloc[:2], reranked, 0.5)


def test_qrels_that_judge_no_candidate_and_nan_validation_scores_are_refused(tiny_qwen3):
    """Qrels whose docnos match no candidate (a spelling mismatch) would 'fit' on all-zero grades, and NaN
    first-stage scores would score every fusion weight alike: both are refused by name before any pass."""
    respelled = fit_data.qrels().assign(docno=lambda q: "doc-" + q.docno.astype(str))
    with pytest.raises(ValueError, match="none of the .* training lists has a candidate that the qrels judge relevant"):
        _reranker(tiny_qwen3).fit(fit_data.results(), respelled, align=False, verbose=False)
    with pytest.raises(ValueError, match="none of the .* validation lists"):
        _reranker(tiny_qwen3).fit(fit_data.results(), fit_data.qrels(), fit_data.results(), respelled,
                                  align=False, verbose=False)
    nan_scores = fit_data.results().assign(score=np.nan)
    with pytest.raises(ValueError, match="HeadRank.fit: fuse=True fuses the validation lists .* not a finite number"):
        _reranker(tiny_qwen3).fit(fit_data.results(), fit_data.qrels(), nan_scores, fit_data.qrels(), align=False,
                                  fuse=True, verbose=False)
