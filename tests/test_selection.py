"""Head selection: per-head profiles are the single-head rankings' nDCG; top-k by nDCG - lambda x entropy."""
import ir_measures
import numpy as np
import pandas as pd
import pytest

from pyterrier_headrank import HeadRank, HeadSet
from pyterrier_headrank.plots import head_map
from pyterrier_headrank.selection import HeadProfile, default_max_layer, normalised_entropy, profile_heads
from pyterrier_headrank.training.lists import graded_lists

import fit_data


def _reranker(tiny, **kw):
    """A tiny reranker in first-stage order (the profiles below read windows in that order; the training-free
    default order is reversed)."""
    model, tokenizer = tiny
    return HeadRank(model, tokenizer=tokenizer, max_passage_tokens=24, **{"order": "first-stage", **kw})


def test_normalised_entropy():
    assert normalised_entropy(np.ones(5)) == pytest.approx(1.0)
    assert normalised_entropy(np.array([0.0, 3.0, 0.0])) == pytest.approx(0.0)
    two = normalised_entropy(np.array([[1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]]))
    np.testing.assert_allclose(two, [0.5, 1.0])


def test_default_max_layer_is_two_thirds_of_depth():
    assert default_max_layer(30) == 19
    assert default_max_layer(4) == 2
    assert default_max_layer(1) == 0


def test_profile_equals_single_head_rerankers(tiny_qwen3):
    """The profile's nDCG of a head is the nDCG@10 of HeadRank reading that head alone (catches head bookkeeping)."""
    reranker = _reranker(tiny_qwen3)
    reader, prompt, _ = reranker.engine()
    lists = graded_lists(fit_data.results(), fit_data.qrels())
    windows = [prompt.window(prompt.truncate_passages(l.texts)[0], prompt.query_part(l.query)) for l in lists]
    profile = profile_heads(reader, windows, [l.labels for l in lists], [l.qid for l in lists], max_layer=2,
                            verbose=False)
    assert profile.shape == (4, 4)
    assert np.isnan(profile.ndcg[3]).all() and not np.isnan(profile.ndcg[:3]).any()
    assert ((profile.entropy[:3] > 0) & (profile.entropy[:3] <= 1)).all()
    assert profile.ndcg[:3].std() > 0, "heads of a random model differ"
    qrels = fit_data.qrels()
    judged = pd.DataFrame({"query_id": qrels.qid, "doc_id": qrels.docno, "relevance": qrels.label})
    for layer, head in [(0, 0), (1, 3), (2, 1)]:
        run = _reranker(tiny_qwen3, heads=[(layer, head)]).transform(fit_data.results())
        run = pd.DataFrame({"query_id": run.qid, "doc_id": run.docno, "score": run.score})
        expected = ir_measures.calc_aggregate([ir_measures.nDCG @ 10], judged, run)[ir_measures.nDCG @ 10]
        assert profile.ndcg[layer, head] == pytest.approx(expected, abs=1e-9)


def _profile():
    ndcg = np.array([[0.1, 0.9, 0.3], [0.8, 0.2, 0.7], [np.nan] * 3])
    entropy = np.array([[0.5, 0.99, 0.5], [0.2, 0.1, 0.95], [np.nan] * 3])
    return HeadProfile(ndcg, entropy, num_queries=7, max_layer=1)


def test_select_top_k_by_discriminability_minus_entropy():
    profile = _profile()
    plain = profile.select(k=2, lam=0.0)
    assert plain.heads == ((0, 1), (1, 0))
    assert plain.deepest_layer == 1
    # a strong entropy penalty prefers the focused heads: (1,1) 0.2-0.1, (1,0) 0.8-0.2 ... over (0,1) 0.9-0.99
    penalised = profile.select(k=2, lam=1.0)
    assert penalised.heads == ((1, 0), (1, 1))
    assert set(profile.select(k=6, lam=0.1).heads) == {(l, h) for l in range(2) for h in range(3)}
    with pytest.raises(ValueError, match="HeadRank"):
        profile.select(k=7)
    with pytest.raises(ValueError, match="HeadRank"):
        profile.select(k=0)


def test_profile_round_trips_through_dict():
    profile = _profile()
    again = HeadProfile.from_dict(profile.to_dict())
    np.testing.assert_allclose(again.ndcg, profile.ndcg)
    np.testing.assert_allclose(again.entropy, profile.entropy)
    assert again.select(3, 0.3) == profile.select(3, 0.3)


def test_fit_selection_only_changes_heads_and_scores(tiny_qwen3):
    zero_shot = _reranker(tiny_qwen3)
    before = zero_shot.transform(fit_data.results())
    reranker = _reranker(tiny_qwen3).fit(fit_data.results(), fit_data.qrels(), align=False, k=3, max_layer=2,
                                         verbose=False)
    assert isinstance(reranker.heads, HeadSet) and len(reranker.heads) == 3
    assert reranker.heads == reranker.head_profile_.select(3, 0.1)
    assert reranker.heads.deepest_layer <= 2
    assert getattr(reranker, "adapter_", None) is None
    after = reranker.transform(fit_data.results())
    assert not np.allclose(before.sort_values(["qid", "docno"]).score, after.sort_values(["qid", "docno"]).score)
    summary = reranker.fit_summary_
    assert summary["selection"]["queries"] == 6 and summary["train"]["queries"] == 6
    assert "alignment" not in summary


def test_head_map_png(tiny_qwen3, tmp_path):
    profile = _profile()
    heads = profile.select(k=2, lam=0.0)
    path = tmp_path / "map.png"
    fig = head_map(profile, heads, lam=0.0, path=str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    boxes = [p for p in fig.axes[0].patches]
    assert sorted((int(round(b.get_y() + 0.5)), int(round(b.get_x() + 0.5))) for b in boxes) == sorted(heads.heads)
    with pytest.raises(ValueError, match="HeadRank"):
        head_map(profile, what="nonsense")
