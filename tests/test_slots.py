"""The per-slot correction: learned from the training lists only, applied per prompt slot, kept in folders."""
import numpy as np
import pytest

from pyterrier_headrank import HeadRank, HeadRankCache
from pyterrier_headrank.slots import SLOT_BINS, corrected, learn_slot_bias, slot_bins
from pyterrier_headrank.training.lists import graded_lists

import fit_data

TRAIN, VALID = ["q1", "q2", "q3", "q4"], ["q5", "q6"]


def _reranker(tiny_qwen3, **settings):
    model, tokenizer = tiny_qwen3
    return HeadRank(model, tokenizer=tokenizer, max_passage_tokens=24, **settings)


def test_slot_bins_span_the_window():
    assert slot_bins(1).tolist() == [0]
    assert slot_bins(20).tolist() == list(range(20))
    bins = slot_bins(7)
    assert bins[0] == 0 and bins[-1] == SLOT_BINS - 1 and (np.diff(bins) > 0).all()
    assert learn_slot_bias([np.array([1.0, 5.0, 3.0])], [np.array([0, 2, 0])], bins=3) == (1.0, 2.0, 3.0), \
        "irrelevant passages only; an empty bin gets their overall mean"
    np.testing.assert_allclose(corrected([1.0, 1.0, 1.0], (0.5, 0.0, -0.5)), [0.5, 1.0, 1.5])


@pytest.mark.parametrize("order", ["first-stage", "reversed"])
def test_fit_learns_the_correction_from_the_training_lists_only(tiny_qwen3, order, tmp_path):
    model, tokenizer = tiny_qwen3
    fits = []
    for valid in (VALID, VALID[:1]):  # other validation queries: the same correction
        reranker = _reranker(tiny_qwen3, order=order)
        reranker.fit(fit_data.results(TRAIN), fit_data.qrels(qids=TRAIN), fit_data.results(valid),
                     fit_data.qrels(qids=valid), k=2, max_layer=2, align=False, slot_correction=True, verbose=False)
        fits.append(reranker)
    assert fits[0].slot_bias == fits[1].slot_bias and len(fits[0].slot_bias) == SLOT_BINS
    # by hand: the fitted heads' scores of the training lists, irrelevant passages, by prompt slot
    plain = _reranker(tiny_qwen3, order=order, heads=fits[0].heads)
    lists = graded_lists(fit_data.results(TRAIN), fit_data.qrels(qids=TRAIN))
    scores = plain.score_lists([(c.query, c.texts) for c in lists])
    flip = (lambda x: x[::-1]) if order == "reversed" else (lambda x: x)
    expected = learn_slot_bias([flip(s) for s in scores], [flip(c.labels) for c in lists])
    np.testing.assert_allclose(fits[0].slot_bias, expected, rtol=1e-6)
    # applied per prompt slot, and kept in the folder
    (with_bias,) = fits[0].score_lists([(lists[0].query, lists[0].texts)])
    np.testing.assert_allclose(with_bias, flip(corrected(flip(scores[0]), fits[0].slot_bias)), rtol=1e-6)
    fits[0].save(tmp_path / "slots")
    loaded = HeadRank.from_pretrained(tmp_path / "slots", model=model, tokenizer=tokenizer)
    assert loaded.slot_bias == fits[0].slot_bias
    cache = HeadRankCache(loaded, tmp_path / "c.sqlite")
    cache(fit_data.results(TRAIN))
    assert cache.misses == len(TRAIN), "a reranker with a slot correction can be cached"


def test_bad_slot_bias_is_refused(tiny_qwen3):
    with pytest.raises(ValueError, match="slot_bias must be None or at least two finite numbers"):
        _reranker(tiny_qwen3, slot_bias=[1.0, float("nan")])
