"""Fusion with the first stage: ``fuse=None`` is attention alone; a weight fuses z-scores per query; fit chooses
the weight on validation queries; folders and the score cache keep it apart from attention-only scores."""
import numpy as np
import pandas as pd
import pytest

from pyterrier_headrank import HeadRank, HeadRankCache
from pyterrier_headrank.fusion import fuse_scores, zscore

import fit_data

TRAIN, VALID = ["q1", "q2", "q3", "q4"], ["q5", "q6"]


def _reranker(tiny_qwen3, **settings):
    model, tokenizer = tiny_qwen3
    return HeadRank(model, tokenizer=tokenizer, max_passage_tokens=24, **settings)


def _by_docno(frame: pd.DataFrame) -> pd.Series:
    return frame.set_index("docno")["score"].sort_index()


def test_fused_scores_are_the_weighted_z_scores(tiny_qwen3):
    results = fit_data.results()
    results["score"] = results["score"] ** 2  # not evenly spaced: z-scores differ from ranks
    attention = _reranker(tiny_qwen3)
    fused = _reranker(tiny_qwen3, fuse=0.3)
    plain, mixed = attention(results), fused(results)
    for qid, group in results.groupby("qid"):
        alone = _by_docno(plain[plain.qid == qid]).loc[group["docno"]].to_numpy()
        expected = 0.3 * zscore(group["score"].to_numpy()) + 0.7 * zscore(alone)
        np.testing.assert_allclose(_by_docno(mixed[mixed.qid == qid]).loc[group["docno"]].to_numpy(), expected,
                                   rtol=1e-9, atol=1e-12)
    first_only = _reranker(tiny_qwen3, fuse=1.0)(results)
    assert (first_only.groupby("qid")["docno"].apply(list) ==
            results.sort_values(["qid", "rank"]).groupby("qid")["docno"].apply(list)).all()


def test_fuse_none_is_attention_alone_and_bad_weights_are_refused(tiny_qwen3):
    results = fit_data.results()
    assert _reranker(tiny_qwen3, fuse=None).fuse is None
    np.testing.assert_array_equal(_by_docno(_reranker(tiny_qwen3, fuse=None)(results)),
                                  _by_docno(_reranker(tiny_qwen3)(results)))
    for bad in (1.5, -0.1, "bm25", True):
        with pytest.raises(ValueError, match="must be None \\(pure attention\\) or a weight in \\[0, 1\\]"):
            _reranker(tiny_qwen3, fuse=bad)
    with pytest.raises(ValueError, match="fuse=0.5 fuses with the first stage's score, but 1 row\\(s\\) have a 'score' "
                                         "that is not a finite"):
        _reranker(tiny_qwen3, fuse=0.5)(results.assign(score=[None] + [1.0] * (len(results) - 1)))


def test_without_a_score_column_the_first_stage_order_stands_in(tiny_qwen3):
    results = fit_data.results()
    results = results[results["qid"] == results["qid"].iloc[0]]
    by_rank = results.assign(score=-results["rank"].astype(float))
    np.testing.assert_allclose(_by_docno(_reranker(tiny_qwen3, fuse=0.5)(results.drop(columns=["score"]))),
                               _by_docno(_reranker(tiny_qwen3, fuse=0.5)(by_rank)))


def test_rank_fuses_with_the_given_order(tiny_qwen3):
    passages = ["cats purr", "dogs bark", "purring cats are content", "fish"]
    (attention,) = _reranker(tiny_qwen3).score_lists([("why do cats purr", passages)])
    hits = _reranker(tiny_qwen3, fuse=0.4).rank("why do cats purr", passages)
    expected = fuse_scores(-np.arange(4.0), attention, 0.4)
    assert [h["corpus_id"] for h in hits] == list(np.argsort(-expected, kind="stable"))
    np.testing.assert_allclose([h["score"] for h in hits], np.sort(expected)[::-1])


def test_fit_chooses_the_weight_on_validation_and_the_folder_keeps_it(tiny_qwen3, tmp_path):
    model, tokenizer = tiny_qwen3
    reranker = _reranker(tiny_qwen3)
    reranker.fit(fit_data.results(TRAIN), fit_data.qrels(qids=TRAIN), fit_data.results(VALID),
                 fit_data.qrels(qids=VALID), k=2, max_layer=2, epochs=1, fuse=True, verbose=False)
    table = reranker.fit_summary_["fusion"]["valid_ndcg10_by_weight"]
    assert reranker.fuse in table and table[reranker.fuse] == max(table.values())
    assert min(w for w, v in table.items() if v == max(table.values())) == reranker.fuse, "ties: more attention"
    reranker.save(tmp_path / "fused")
    loaded = HeadRank.from_pretrained(tmp_path / "fused", model=model, tokenizer=tokenizer)
    assert loaded.fuse == reranker.fuse
    np.testing.assert_array_equal(_by_docno(loaded(fit_data.results())), _by_docno(reranker(fit_data.results())))
    with pytest.raises(ValueError, match="fuse=True chooses the fusion weight on validation queries"):
        _reranker(tiny_qwen3).fit(fit_data.results(), fit_data.qrels(), k=2, fuse=True, verbose=False)


def test_the_cache_keys_fused_scores_on_the_first_stage_scores(tiny_qwen3, tmp_path):
    results = fit_data.results(["q1"])
    rescored = results.assign(score=results["score"] ** 3)  # same candidates, same order, other first-stage scores
    cache = HeadRankCache(_reranker(tiny_qwen3, fuse=0.5), tmp_path / "fused.sqlite")
    first, second = cache(results), cache(rescored)
    assert (cache.hits, cache.misses) == (0, 2), "other first-stage scores: another entry"
    assert not np.allclose(_by_docno(first), _by_docno(second))
    np.testing.assert_array_equal(_by_docno(cache(rescored)), _by_docno(second))
    assert cache.hits == 1
    plain = HeadRankCache(_reranker(tiny_qwen3), tmp_path / "plain.sqlite")
    plain(results), plain(rescored)
    assert (plain.hits, plain.misses) == (1, 1), "attention alone does not depend on the first stage's scores"
