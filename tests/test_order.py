"""The prompt order setting: reversed scores map back to the right passages, averaged is the mean of both, fit trains
in the reranker's order and the folder keeps it."""
import numpy as np
import pytest

from pyterrier_headrank import HeadRank

import fit_data

QUERY = "why do cats purr"
PASSAGES = ["cats purr when content", "dogs bark at night", "purring is a vibration of the larynx",
            "fish swim in schools", "a kitten purrs while nursing", "the stock market fell"]


def _reranker(tiny_qwen3, **settings):
    """A tiny reranker; first-stage order unless ``order`` is given (the training-free default is reversed)."""
    model, tokenizer = tiny_qwen3
    return HeadRank(model, tokenizer=tokenizer, max_passage_tokens=24, **{"order": "first-stage", **settings})


def test_reversed_scores_map_back_to_their_passages(tiny_qwen3):
    """Reversed: the prompt is the first-stage prompt of the reversed list, and each score goes back to its passage."""
    (reversed_scores,) = _reranker(tiny_qwen3, order="reversed").score_lists([(QUERY, PASSAGES)])
    (of_reversed_list,) = _reranker(tiny_qwen3).score_lists([(QUERY, PASSAGES[::-1])])
    np.testing.assert_allclose(reversed_scores, of_reversed_list[::-1], rtol=1e-5, atol=1e-7)
    (first_stage,) = _reranker(tiny_qwen3).score_lists([(QUERY, PASSAGES)])
    assert not np.allclose(first_stage, reversed_scores), "the order changes the scores of this model"


def test_averaged_is_the_mean_of_both_orders_also_across_windows(tiny_qwen3):
    passages = PASSAGES * 4  # 24 candidates, several windows with anchors
    settings = dict(max_window_tokens=400, max_window_passages=8, n_anchors=2)
    by_order = {order: _reranker(tiny_qwen3, order=order, **settings).score_lists([(QUERY, passages)])[0]
                for order in ("first-stage", "reversed", "averaged")}
    assert len(by_order["averaged"]) == len(passages)
    np.testing.assert_allclose(by_order["averaged"], (by_order["first-stage"] + by_order["reversed"]) / 2,
                               rtol=1e-5, atol=1e-7)


def test_unknown_order_is_refused_at_construction(tiny_qwen3):
    with pytest.raises(ValueError, match="order='backwards' is not one of 'first-stage', 'reversed', 'averaged'"):
        _reranker(tiny_qwen3, order="backwards")


def test_fit_trains_in_the_reranker_order_and_the_folder_keeps_it(tiny_qwen3, tmp_path):
    model, tokenizer = tiny_qwen3
    fitted = _reranker(tiny_qwen3, order="reversed")
    fitted.fit(fit_data.results(), fit_data.qrels(), k=2, max_layer=2, epochs=1, cv_folds=0, verbose=False)
    fitted.save(tmp_path / "reversed")
    loaded = HeadRank.from_pretrained(tmp_path / "reversed", model=model, tokenizer=tokenizer)
    assert loaded.order == "reversed"
    np.testing.assert_array_equal(loaded.transform(fit_data.results()).score.to_numpy(),
                                  fitted.transform(fit_data.results()).score.to_numpy())
    with pytest.raises(ValueError, match="fit trains in one prompt order"):
        _reranker(tiny_qwen3, order="averaged").fit(fit_data.results(), fit_data.qrels(), k=2, verbose=False)


def test_reversed_fit_profiles_each_passage_with_its_own_label(tiny_qwen3):
    """Fitting in reversed order must see exactly what a first-stage fit sees on the reversed lists: the same prompts,
    each passage with its own label, hence the same head profile (a label off by a slot would change it)."""
    results = fit_data.results()
    flipped = results.copy()
    flipped["rank"] = flipped.groupby("qid")["rank"].transform(lambda r: r.max() - r + r.min())
    flipped["score"] = -flipped["score"]
    profiles = []
    for order, frame in (("reversed", results), ("first-stage", flipped)):
        reranker = _reranker(tiny_qwen3, order=order)
        reranker.fit(frame, fit_data.qrels(), k=2, max_layer=2, align=False, cv_folds=0, verbose=False)
        profiles.append(reranker.head_profile_)
    np.testing.assert_allclose(profiles[0].ndcg, profiles[1].ndcg, rtol=1e-5, equal_nan=True)
    np.testing.assert_allclose(profiles[0].entropy, profiles[1].entropy, rtol=1e-5, equal_nan=True)
    as_given = _reranker(tiny_qwen3)
    as_given.fit(results, fit_data.qrels(), k=2, max_layer=2, align=False, cv_folds=0, verbose=False)
    assert not np.allclose(as_given.head_profile_.ndcg, profiles[0].ndcg, equal_nan=True), "order matters here"


def test_zero_shot_by_name(tiny_qwen3):
    named = _reranker(tiny_qwen3, heads="zero-shot")
    assert named.heads is None and named.head_set == _reranker(tiny_qwen3).head_set
    with pytest.raises(ValueError, match="the only named head set is 'zero-shot'"):
        _reranker(tiny_qwen3, heads="best")
