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


def test_later_windows_are_balanced_and_repeat_the_overlap():
    greedy = plan_windows([10] * 24, budget=100, max_passages=50, n_anchors=3, balanced=False)
    assert [len(w) - 3 for w in greedy[1:]] == [7, 7]  # 10 + 7 + 7: fills greedily
    assert [len(w) - 3 for w in plan_windows([10] * 25, 100, 50, 3, balanced=False)[1:]] == [7, 7, 1]
    balanced = plan_windows([10] * 25, budget=100, max_passages=50, n_anchors=3)
    assert [len(w) - 3 for w in balanced[1:]] == [5, 5, 5]  # no tiny last window
    overlapping = plan_windows([10] * 25, budget=100, max_passages=50, n_anchors=2, overlap=3)
    for before, window in zip(overlapping, overlapping[1:]):
        assert window[:2] == [0, 1]
        assert window[2:5] == [i for i in before if i not in (0, 1)][-3:]  # the last 3 of the window before
        assert len(window) * 10 <= 100
    assert sorted(set(i for w in overlapping for i in w)) == list(range(25))


def test_shared_merge_aligns_on_every_shared_passage_and_averages_the_overlap():
    windows = [[0, 1, 2, 3], [0, 3, 4, 5]]  # anchor 0; passage 3 carried over
    scores = [np.array([0.5, 0.4, 0.3, 0.2]), np.array([0.1, 0.4, 0.0, 0.3])]
    shift = np.mean([0.5, 0.2]) - np.mean([0.1, 0.4])
    merged = merge_window_scores(windows, scores, 6, n_anchors=1, merge="shared")
    np.testing.assert_allclose(merged, [0.5, 0.4, 0.3, (0.2 + 0.4 + shift) / 2, 0.0 + shift, 0.3 + shift])
    by_anchor = merge_window_scores(windows, scores, 6, n_anchors=1, merge="anchors")
    np.testing.assert_allclose(by_anchor[4:], [0.0 + 0.4, 0.3 + 0.4])  # shifted by the anchor alone
    affine = merge_window_scores(windows, scores, 6, n_anchors=1, merge="affine")
    scale = np.std([0.5, 0.2]) / np.std([0.1, 0.4])
    np.testing.assert_allclose(affine[4], (0.0 - 0.25) * scale + 0.35)
    z = merge_window_scores(windows, scores, 6, n_anchors=1, merge="zscore")
    np.testing.assert_allclose(z[:3], (scores[0][:3] - scores[0].mean()) / scores[0].std())
    with pytest.raises(ValueError, match="merge='median'"):
        merge_window_scores(windows, scores, 6, n_anchors=1, merge="median")


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


def test_overlap_on_the_tiny_model_scores_every_row_and_is_checked(tiny_qwen3):
    model, tokenizer = tiny_qwen3
    texts = [f"passage {i} about cats and dogs" for i in range(30)]
    reranker = HeadRank(model, "zero-shot", tokenizer=tokenizer, max_window_tokens=230, max_passage_tokens=16,
                        window_overlap=2, n_anchors=2)
    plan, _ = reranker.windows("cats", texts)
    assert len(plan) > 2 and all(len(set(w) & set(before)) == 4 for before, w in zip(plan, plan[1:]))
    (scores,) = reranker.score_lists([("cats", texts)])
    assert scores.shape == (30,) and np.isfinite(scores).all()
    with pytest.raises(ValueError, match="window_overlap"):
        HeadRank(model, "zero-shot", tokenizer=tokenizer, max_window_passages=5, n_anchors=2, window_overlap=3)
    with pytest.raises(ValueError, match="overlapping passages"):
        HeadRank(model, "zero-shot", tokenizer=tokenizer, max_window_tokens=100, max_passage_tokens=16,
                 window_overlap=4).engine()


def test_cascade_pool_is_the_fused_head_and_ranks_first():
    from pyterrier_headrank.cascade import POOL_WEIGHT, pool_on_top, rescore_pool
    from pyterrier_headrank.fusion import fuse_scores

    merged = np.array([0.1, 0.0, 0.2, 0.9, 0.0, 0.0, 0.0, 0.8])
    pool = rescore_pool(merged, 3)  # the first stage's order, not its scores: ranks 0..7
    expected = np.sort(np.argsort(-fuse_scores(-np.arange(8.0), merged, POOL_WEIGHT), kind="stable")[:3])
    np.testing.assert_array_equal(pool, expected)
    assert list(pool) == sorted(pool)  # first-stage order: the order a window takes them in
    final = pool_on_top(merged, pool, np.array([5.0, -2.0, 1.0]))
    order = list(np.argsort(-final, kind="stable"))
    assert order[:3] == [pool[0], pool[2], pool[1]]  # the pool first, by its new scores
    rest = [i for i in range(8) if i not in pool]
    assert order[3:] == sorted(rest, key=lambda i: -merged[i])  # then the rest, in merged order


def test_a_long_list_is_ranked_as_a_cascade_on_the_tiny_model(tiny_qwen3):
    model, tokenizer = tiny_qwen3
    texts = [f"passage {i} about {'cats' if i % 3 else 'dogs'} and more words" for i in range(24)]
    first = np.linspace(24, 1, 24)
    settings = dict(tokenizer=tokenizer, max_window_tokens=260, max_passage_tokens=16, n_anchors=2)
    cascade = HeadRank(model, "zero-shot", rescore_top=6, fuse=0.3, **settings)
    assert len(cascade.windows("cats", texts)[0]) > 1
    (final,) = cascade.final_scores([("cats", texts)], [first])
    (merged,) = cascade.score_lists([("cats", texts)])
    from pyterrier_headrank.cascade import rescore_pool
    from pyterrier_headrank.fusion import fuse_scores
    pool = rescore_pool(merged, 6)
    (again,) = cascade.score_lists([("cats", [texts[i] for i in pool])])  # the pool in one window
    top = np.argsort(-final, kind="stable")
    assert sorted(top[:6]) == sorted(pool)
    np.testing.assert_allclose(final[pool], fuse_scores(first[pool], again, 0.3), rtol=1e-5, atol=1e-6)
    plain = HeadRank(model, "zero-shot", rescore_top=None, fuse=0.3, **settings)
    np.testing.assert_allclose(plain.final_scores([("cats", texts)], [first])[0], fuse_scores(first, merged, 0.3),
                               rtol=1e-5, atol=1e-6)
    short = [("cats", texts[:4])]  # one window: no cascade
    np.testing.assert_allclose(cascade.final_scores(short, [first[:4]])[0], plain.final_scores(short, [first[:4]])[0])
    with pytest.raises(ValueError, match="rescore_top=0"):
        HeadRank(model, "zero-shot", rescore_top=0, **settings)


def test_long_list_settings_round_trip_and_old_folders_get_the_defaults(tiny_qwen3, tmp_path):
    model, tokenizer = tiny_qwen3
    HeadRank(model, [(0, 0), (1, 1)], tokenizer=tokenizer, window_overlap=2, rescore_top=None).save(tmp_path / "f")
    loaded = HeadRank.from_pretrained(tmp_path / "f", model=model, tokenizer=tokenizer)
    assert (loaded.window_overlap, loaded.rescore_top) == (2, None)
    shipped = HeadRank("smollm2-135m")  # its folder predates both settings
    assert (shipped.window_overlap, shipped.rescore_top) == (0, 20)
