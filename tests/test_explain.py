"""explain(): per-passage attention behind a ranking, consistent with the reranker's own scores; and its plot."""
import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest

from pyterrier_headrank import HeadRank, HeadSet
from pyterrier_headrank.explain import COLUMNS, explain, explain_results, plot_attention

QUERY = "what is a cat"
TEXTS = ["cats purr and sleep a lot", "dogs bark loudly at night", "a cat is a small feline", "",
         "the stock market fell today", "kittens are young cats " * 4]


@pytest.fixture(scope="module")
def reranker(tiny_qwen3):
    model, tokenizer = tiny_qwen3
    return HeadRank(model, tokenizer=tokenizer)


def test_frame_decomposes_the_reranker_score(reranker):
    frame = explain(reranker, QUERY, TEXTS, docnos=[f"d{i}" for i in range(len(TEXTS))])
    assert list(frame.columns[: len(COLUMNS)]) == COLUMNS and "text" in frame.columns
    assert list(frame.position) == list(range(len(TEXTS))) and list(frame.docno) == [f"d{i}" for i in range(6)]
    (expected,) = reranker.score_lists([(QUERY, TEXTS)])
    np.testing.assert_allclose(frame.score, expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(frame.score, frame.raw - frame.calibration, rtol=1e-5, atol=1e-7)  # calibrated
    assert sorted(frame["rank"]) == list(range(len(TEXTS)))
    assert frame.loc[frame["rank"] == 0, "score"].item() == frame.score.max()
    # shares are attention probabilities: within [0, 1], summing to at most 1 over the passages of one window
    assert frame.share.between(0, 1).all() and frame.calibration_share.between(0, 1).all()
    assert frame.share.sum() <= 1 + 1e-6
    assert frame.loc[3, "share"] == 0  # the empty passage has no tokens to attend to
    assert frame.attrs["query"] == QUERY and frame.attrs["num_heads"] == len(reranker.head_set)


def test_ranks_agree_with_rank_and_transform(reranker):
    frame = explain(reranker, QUERY, TEXTS)
    ranked = reranker.rank(QUERY, TEXTS)
    assert [r["corpus_id"] for r in ranked] == list(frame.sort_values("rank").position)


def test_uncalibrated_reranker_scores_raw_attention(tiny_qwen3):
    model, tokenizer = tiny_qwen3
    plain = HeadRank(model, tokenizer=tokenizer, calibrate=False)
    frame = explain(plain, QUERY, TEXTS)
    (expected,) = plain.score_lists([(QUERY, TEXTS)])
    np.testing.assert_allclose(frame.score, expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(frame.score, frame.raw, rtol=1e-5, atol=1e-7)
    assert (frame.calibration != 0).any(), "the 'N/A' attention is still reported"


def test_weighted_heads_enter_raw_and_score(tiny_qwen3):
    model, tokenizer = tiny_qwen3
    heads = HeadSet(((1, 0), (0, 3)), (2.0, -0.5))
    weighted = HeadRank(model, tokenizer=tokenizer, heads=heads)
    frame = explain(weighted, QUERY, TEXTS)
    (expected,) = weighted.score_lists([(QUERY, TEXTS)])
    np.testing.assert_allclose(frame.score, expected, rtol=1e-5, atol=1e-7)
    single = [explain(HeadRank(model, tokenizer=tokenizer, heads=[h]), QUERY, TEXTS) for h in heads.heads]
    np.testing.assert_allclose(frame.raw, 2.0 * single[0].raw - 0.5 * single[1].raw, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(frame.share, (single[0].share + single[1].share) / 2, rtol=1e-5, atol=1e-7)


def test_long_lists_merge_windows_like_ranking(tiny_qwen3):
    model, tokenizer = tiny_qwen3
    small = HeadRank(model, tokenizer=tokenizer, max_passage_tokens=16, max_window_tokens=200, n_anchors=2,
                     batch_size=3)
    texts = [f"passage number {i} about cats and dogs and other animals of the farm" for i in range(14)]
    frame = explain(small, QUERY, texts)
    assert frame.attrs["windows"] > 1 and frame.window.max() == frame.attrs["windows"] - 1
    assert (frame.window.iloc[:2] == 0).all(), "anchors belong to the first window"
    (expected,) = small.score_lists([(QUERY, texts)])
    np.testing.assert_allclose(frame.score, expected, rtol=1e-4, atol=1e-6)


def test_explain_results_reads_a_result_frame(reranker):
    results = pd.DataFrame({"qid": ["1"] * 3 + ["2"] * 2, "query": [QUERY] * 3 + ["dogs"] * 2,
                            "docno": ["a", "b", "c", "d", "e"], "rank": [2, 0, 1, 0, 1],
                            "text": ["cats", "dogs", "a cat", "dogs bark", "fish"]})
    qrels = pd.DataFrame({"qid": ["1", "1"], "docno": ["c", "a"], "label": [2, 0]})
    frame = explain_results(reranker, results, "1", qrels)
    assert list(frame.docno) == ["b", "c", "a"]  # first-stage order
    assert list(frame.label) == [0.0, 2.0, 0.0] and frame.attrs["qid"] == "1"
    with pytest.raises(KeyError, match="qid"):
        explain_results(reranker, results, "9")
    with pytest.raises(ValueError, match="text"):
        explain_results(reranker, results.drop(columns="text"), "1")


def test_bad_input_is_refused(reranker):
    with pytest.raises(ValueError, match="no passages"):
        explain(reranker, QUERY, [])
    with pytest.raises(ValueError, match="empty"):
        explain(reranker, "  ", TEXTS)
    with pytest.raises(ValueError, match="docnos"):
        explain(reranker, QUERY, TEXTS, docnos=["x"])
    with pytest.raises(TypeError, match="HeadRank"):
        explain(object(), QUERY, TEXTS)
    with pytest.raises(ValueError, match="explain"):
        plot_attention(pd.DataFrame({"x": [1]}))


def test_plot_draws_one_bar_per_passage(reranker, tmp_path):
    frame = explain(reranker, QUERY, TEXTS, labels=[1, 0, 2, 0, 0, 1])
    path = tmp_path / "attention.png"
    fig = plot_attention(frame, path=str(path))
    attention_ax, score_ax = fig.axes
    assert len(attention_ax.patches) == len(TEXTS) and len(score_ax.patches) == len(TEXTS)
    widths = [p.get_width() for p in attention_ax.patches]
    np.testing.assert_allclose(widths, 100 * frame.share, rtol=1e-6)
    colours = {tuple(np.round(p.get_facecolor()[:3], 3)) for p in attention_ax.patches}
    assert len(colours) == 2, "relevant passages are drawn in their own colour"
    assert path.stat().st_size > 0
    import matplotlib.pyplot as plt
    fig2, ax = plt.subplots()
    assert plot_attention(frame, ax=ax) is fig2 and len(fig2.axes) == 1
    plt.close("all")


def test_subclass_scoring_is_kept(tiny_qwen3):
    """ICR scores with a token filter: explain reports ICR's own scores next to the plain attention."""
    from pyterrier_headrank.baselines import ICR

    model, tokenizer = tiny_qwen3
    icr = ICR(model, tokenizer=tokenizer)
    frame = explain(icr, QUERY, TEXTS)
    (expected,) = icr.score_lists([(QUERY, TEXTS)])
    np.testing.assert_allclose(frame.score, expected, rtol=1e-5, atol=1e-7)
    assert frame.attrs["num_heads"] == 4 * 4  # all heads of the tiny model
