"""Long lists: windows with shared anchors, merged onto one scale; every candidate scored."""
import numpy as np
import pandas as pd
import pytest

from pyterrier_headrank import HeadRank
from pyterrier_headrank.windows import merge_window_scores, plan_windows


def test_plan_covers_every_candidate_once_and_repeats_anchors():
    windows = plan_windows([10] * 25, budget=100, max_passages=50, n_anchors=3)
    assert windows[0] == list(range(10))
    for window in windows[1:]:
        assert window[:3] == [0, 1, 2] and sum(10 for _ in window) <= 100
    others = [i for w in windows[1:] for i in w[3:]]
    assert sorted(windows[0] + others) == list(range(25))


def test_plan_respects_passage_limit_and_single_window_when_it_fits():
    assert plan_windows([5] * 8, budget=1000, max_passages=50, n_anchors=3) == [list(range(8))]
    windows = plan_windows([1] * 12, budget=1000, max_passages=5, n_anchors=2)
    assert all(len(w) <= 5 for w in windows)
    assert sorted(set(i for w in windows for i in w)) == list(range(12))


def test_merge_shifts_later_windows_by_anchor_difference():
    windows = [[0, 1, 2, 3], [0, 1, 4, 5]]
    scores = [np.array([0.5, 0.3, 0.2, 0.1]), np.array([0.1, 0.3, 0.25, 0.05])]
    merged = merge_window_scores(windows, scores, 6, n_anchors=2)
    shift = np.mean([0.5, 0.3]) - np.mean([0.1, 0.3])
    np.testing.assert_allclose(merged, [0.5, 0.3, 0.2, 0.1, 0.25 + shift, 0.05 + shift])


def test_hundred_and_twenty_candidates_on_the_tiny_model(tiny_qwen3):
    model, tokenizer = tiny_qwen3
    rng = np.random.default_rng(0)
    words = ["cat", "dog", "market", "river", "protein", "engine", "music", "law", "star", "bread"]
    texts = [" ".join(rng.choice(words, size=rng.integers(5, 40))) for _ in range(120)]
    frame = pd.DataFrame({"qid": "q1", "query": "cat and dog", "docno": [f"d{i}" for i in range(120)],
                          "text": texts, "score": np.linspace(10, 1, 120)})
    reranker = HeadRank(model, tokenizer=tokenizer, max_window_tokens=600, max_passage_tokens=40, batch_size=3)
    windows = reranker.windows("cat and dog", texts)[0]
    assert len(windows) > 3
    with pytest.warns(UserWarning, match="120 candidates"):
        out = reranker(frame)
    assert len(out) == 120 and set(out.docno) == set(frame.docno)
    assert out["score"].notna().all() and sorted(out["rank"]) == list(range(120))
    # windowed scoring is not the same as one window, but both rank every row
    single = HeadRank(model, tokenizer=tokenizer, max_window_tokens=40000, max_window_passages=200,
                      max_passage_tokens=40)
    with pytest.warns(UserWarning):
        one = single(frame)
    assert len(one) == 120
