"""HeadRank as a PyTerrier transformer: conventions, pipelines, experiments, and bad input."""
import json

import ir_measures
import numpy as np
import pandas as pd
import pyterrier as pt
import pytest
from ir_measures import RR, nDCG

from pyterrier_headrank import HeadRank, HeadSet

from conftest import QWEN3_TOKENIZER, SHARED, need, tiny_decoder


def _tiny_headrank(**kwargs):
    from transformers import AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(need(QWEN3_TOKENIZER))
    return HeadRank(tiny_decoder("qwen3"), tokenizer=tokenizer, **kwargs)


# PyTerrier's own conformance checks, on a loaded model and on a lazily loaded alias (inspection must not load it)
TestHeadRankConforms = pt.testing.transformer_test_class(_tiny_headrank)
TestHeadRankAliasConforms = pt.testing.transformer_test_class(lambda: HeadRank("smollm2-135m"))


@pytest.fixture(scope="module")
def reranker(tiny_qwen3):
    model, tokenizer = tiny_qwen3
    return HeadRank(model, tokenizer=tokenizer)


def _dl21(n_queries=3, depth=10):
    path = need(SHARED / "data" / "dl21-passage-bm25top100" / "candidates.jsonl")
    rows = [json.loads(line) for line in path.open()]
    frame = pd.DataFrame(rows)
    qids = list(dict.fromkeys(frame.qid))[:n_queries]
    frame = frame[frame.qid.isin(qids) & (frame["rank"] < depth + (frame["rank"].min()))]
    return frame.reset_index(drop=True)


def _dl21_qrels(qids):
    path = need(SHARED / "data" / "dl21-passage-bm25top100" / "qrels.tsv")
    qrels = pd.read_csv(path, sep="\t", dtype={"query-id": str, "corpus-id": str})
    qrels.columns = ["qid", "docno", "label"]
    return qrels[qrels.qid.isin(qids)]


def _frame(texts, qid="q1", query="what is a cat", **extra):
    return pd.DataFrame({"qid": qid, "query": query, "docno": [f"d{i}" for i in range(len(texts))],
                         "text": texts, **extra})


def test_keeps_every_column_and_replaces_score_and_rank(reranker):
    frame = _frame(["cats purr", "dogs bark", "fish swim"], score=[3.0, 2.0, 1.0], rank=[0, 1, 2], extra=["x", "y", "z"])
    out = reranker(frame)
    assert set(frame.columns) <= set(out.columns)
    assert list(out["rank"]) == [0, 1, 2]
    assert out["score"].is_monotonic_decreasing
    assert sorted(out.extra) == ["x", "y", "z"]
    assert not np.allclose(sorted(out.score), [1.0, 2.0, 3.0]), "scores were replaced"


def test_empty_frame_gives_empty_ranking_without_loading(reranker):
    lazy = HeadRank("smollm2-135m")
    empty = pd.DataFrame(columns=["qid", "query", "docno", "text"])
    for transformer in (lazy, reranker):
        out = transformer(empty)
        assert len(out) == 0 and {"score", "rank"} <= set(out.columns)
    assert lazy._loaded is None


def test_scores_do_not_depend_on_batching(tiny_qwen3):
    model, tokenizer = tiny_qwen3
    frame = pd.concat([_frame(["a cat", "the dog is here " * 5, "x"], qid="1"),
                       _frame(["plants grow", "cats and dogs", "sun " * 30, "moon"], qid="2", query="garden"),
                       _frame(["only one"], qid="3", query="single")])
    one = HeadRank(model, tokenizer=tokenizer, batch_size=1)(frame)
    many = HeadRank(model, tokenizer=tokenizer, batch_size=8)(frame)
    merged = one.merge(many, on=["qid", "docno"])
    np.testing.assert_allclose(merged.score_x, merged.score_y, rtol=1e-4, atol=1e-6)


def test_framework_free_rank_agrees_with_transform(reranker):
    texts = ["cats purr", "dogs bark loudly", "a cat is a feline", ""]
    ranked = reranker.rank("what is a cat", texts, return_documents=True)
    out = reranker(_frame(texts))
    assert [texts[r["corpus_id"]] for r in ranked] == list(out.text)
    np.testing.assert_allclose([r["score"] for r in ranked], out.score, rtol=1e-6)
    assert len(reranker.rank("what is a cat", texts, top_k=2)) == 2


def test_pipeline_operators_and_experiment(reranker):
    candidates = _dl21()
    first_stage = pt.Transformer.from_df(candidates)
    pipeline = first_stage % 5 >> reranker % 3
    out = pipeline(candidates[["qid", "query"]].drop_duplicates())
    assert out.groupby("qid").size().max() == 3
    assert set(out.docno) <= set(candidates.groupby("qid").head(5).docno)
    table = pt.Experiment([first_stage, first_stage >> reranker], candidates[["qid", "query"]].drop_duplicates(),
                          _dl21_qrels(set(candidates.qid)), eval_metrics=[nDCG @ 10, RR @ 10],
                          names=["BM25", "BM25 >> HeadRank"])
    assert list(table.name) == ["BM25", "BM25 >> HeadRank"]
    assert table["nDCG@10"].between(0, 1).all() and table["RR@10"].between(0, 1).all()


def test_repr_schematic_and_settings(reranker):
    assert repr(HeadRank("smollm2-135m", heads="zero-shot", order="first-stage")) == \
        "HeadRank('smollm2-135m', zero-shot heads)"
    assert repr(HeadRank("smollm2-135m", fuse=None, order="first-stage")) == \
        "HeadRank('smollm2-135m', default fit smollm2-135m-general)"
    assert repr(HeadRank("qwen3-4b", heads=[(3, 1), (5, 2)], order="averaged", fuse=0.25)) == \
        "HeadRank('qwen3-4b', 2 heads, order='averaged', fuse=0.25)"
    schematic = pt.schematic.transformer_schematic(reranker)
    assert schematic["label"] == "HeadRank" and schematic["help_url"].startswith("https://")
    assert reranker.text_field == "text" and reranker.batch_size is None and reranker.calibrate is True


def test_zero_shot_heads_are_the_training_free_band_and_truncate(reranker):
    assert reranker.head_set == HeadSet.training_free(4, 4)
    smollm2, gemma = HeadSet.training_free(30, 9), HeadSet.training_free(18, 4)  # the measured band: 1/2-3/4
    assert sorted({layer for layer, _ in smollm2.heads}) == list(range(15, 23)) and len(smollm2) == 8 * 9
    assert sorted({layer for layer, _ in gemma.heads}) == list(range(9, 14))
    assert smollm2.deepest_layer < 29 and gemma.deepest_layer < 17  # the last layers never run


def test_calibration_changes_scores(tiny_qwen3):
    model, tokenizer = tiny_qwen3
    frame = _frame(["cats purr", "dogs bark", "fish swim"])
    on = HeadRank(model, tokenizer=tokenizer)(frame)
    off = HeadRank(model, tokenizer=tokenizer, calibrate=False)(frame)
    assert (off.score > 0).all()  # raw attention mass is positive
    assert not np.allclose(on.sort_values("docno").score, off.sort_values("docno").score)


# ---- bad input ----------------------------------------------------------------------------------------------------
def test_missing_columns_name_the_transformer(reranker):
    with pytest.raises(pt.validate.InputValidationError, match="HeadRank"):
        reranker(pd.DataFrame({"qid": ["1"], "docno": ["a"]}))
    with pytest.raises(pt.validate.InputValidationError, match="body"):
        HeadRank("smollm2-135m", text_field="body")(_frame(["x"]))


def test_nan_and_empty_text_are_kept_and_scored_as_empty(reranker):
    out = reranker(_frame(["cats purr", np.nan, "", None, "a cat"]))
    assert len(out) == 5
    empty = out[out.docno.isin(["d1", "d2", "d3"])]
    assert (empty.score == 0).all()


def test_duplicate_docnos_warn_and_keep_both_rows(reranker):
    frame = _frame(["cats purr", "dogs bark", "cats purr"])
    frame.loc[2, "docno"] = "d0"
    with pytest.warns(UserWarning, match="duplicate docnos"):
        out = reranker(frame)
    assert len(out) == 3 and (out.docno == "d0").sum() == 2


def test_single_candidate_and_int_qids(reranker):
    out = reranker(pd.DataFrame({"qid": [7, 8], "query": ["cat", "dog"], "docno": ["a", "b"], "text": ["x", "y"]}))
    assert list(out.qid) == [7, 8] and list(out["rank"]) == [0, 0]


def test_ten_thousand_token_passages_are_truncated(reranker):
    huge = "lorem ipsum dolor sit amet " * 2000
    out = reranker(_frame([huge, "a cat", huge + " cat"]))
    assert len(out) == 3 and np.isfinite(out.score).all()


def test_cjk_and_emoji(reranker):
    out = reranker(_frame(["猫はかわいい🐱", "犬🐶が好き", "東京"], query="猫 🐱"))
    assert len(out) == 3 and np.isfinite(out.score).all() and out.score.nunique() == 3


def test_empty_query_and_conflicting_queries_are_clear_errors(reranker):
    with pytest.raises(ValueError, match="HeadRank: the query of qid 'q1' is empty"):
        reranker(_frame(["x"], query="  "))
    frame = pd.concat([_frame(["x"]), _frame(["y"], query="another")])
    with pytest.raises(ValueError, match="different query texts"):
        reranker(frame)


def test_bad_settings_are_clear_errors(tiny_qwen3):
    model, tokenizer = tiny_qwen3
    with pytest.raises(ValueError, match="tokenizer"):
        HeadRank(model)
    with pytest.raises(ValueError, match="does not exist in a model with 4 layers"):
        HeadRank(model, tokenizer=tokenizer, heads=[(9, 0)])(_frame(["x"]))
    with pytest.raises(ValueError, match="max_window_tokens"):
        HeadRank(model, tokenizer=tokenizer, max_window_tokens=50)(_frame(["x"]))
    with pytest.raises(ValueError, match="batch_size"):
        HeadRank(model, tokenizer=tokenizer, batch_size=0)
    with pytest.raises(ValueError, match="dtype"):
        HeadRank("smollm2-135m", dtype="float8")


def test_real_smollm2_reranks_dl21(smollm2):
    candidates = _dl21(n_queries=2, depth=8)
    model, tokenizer = smollm2
    out = HeadRank("smollm2-135m", device="cpu")(candidates)
    assert len(out) == len(candidates) and set(out.columns) >= set(candidates.columns)
    assert out.groupby("qid")["rank"].apply(lambda r: sorted(r) == list(range(len(r)))).all()
    assert out.score.nunique() == len(out)
    qrels = _dl21_qrels(set(candidates.qid)).rename(columns={"qid": "query_id", "docno": "doc_id", "label": "relevance"})
    evaluated = ir_measures.calc_aggregate([nDCG @ 10], qrels,
                                           out.rename(columns={"qid": "query_id", "docno": "doc_id"}))
    assert 0 <= evaluated[nDCG @ 10] <= 1


def test_first_contact_errors_come_at_once_and_name_headrank(reranker, tmp_path):
    """Each of these used to fail late (after loading, or after other queries were scored) or deep in a library."""
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="HeadRank: device 'cuda' is not available"):
            HeadRank("smollm2-135m", device="cuda")
    if not torch.backends.mps.is_available():
        with pytest.raises(ValueError, match="HeadRank: device 'mps' is not available"):
            HeadRank("smollm2-135m", device="mps")
    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(ValueError, match="HeadRank: folder .* is not a transformers model"):
        HeadRank(str(tmp_path))
    with pytest.raises(ValueError, match="HeadRank: unknown model 'smolm2-135m'. Known aliases"):
        HeadRank("smolm2-135m")
    from pyterrier_headrank.baselines import ICR, RankGPT
    with pytest.raises(ValueError, match="^ICR: unknown model"):
        ICR("smolm2-135m")
    with pytest.raises(ValueError, match="^RankGPT: device 'cuda'" if not torch.cuda.is_available() else "RankGPT"):
        RankGPT("smollm2-135m", device="cuda" if not torch.cuda.is_available() else "tpu")


def test_nan_qid_is_refused_before_any_query_is_scored():
    scored = []

    class Recording(HeadRank):
        def score_lists(self, lists, desc="HeadRank"):
            scored.append(lists)
            return super().score_lists(lists, desc)

    frame = pd.concat([_frame(["a cat", "a dog"]), _frame(["a cow"], qid=None)], ignore_index=True)
    with pytest.raises(ValueError, match=r"Recording: 1 row\(s\) have no qid .* row\(s\) \[2\]"):
        Recording("smollm2-135m")(frame)
    assert scored == []


def test_missing_text_hints_at_text_field_and_a_text_loader(reranker):
    frame = _frame(["a cat"]).drop(columns=["text"])
    with pytest.raises(pt.validate.InputValidationError, match="text_field=.*|text loader"):
        reranker(frame)
    with pytest.raises(pt.validate.InputValidationError) as caught:
        reranker(frame)
    assert "text loader" in str(caught.value) and "text_field=" in str(caught.value)


def test_rank_with_an_empty_query_reads_well(reranker):
    with pytest.raises(ValueError, match="^HeadRank: the query is empty; HeadRank needs query text to rerank$"):
        reranker.rank("  ", ["a passage"])


def test_progress_bar_only_when_verbose(tiny_qwen3, capfd):
    model, tokenizer = tiny_qwen3
    frame = _frame(["cats purr", "dogs bark"])
    HeadRank(model, tokenizer=tokenizer, max_passage_tokens=24)(frame)
    assert capfd.readouterr().err == ""
    HeadRank(model, tokenizer=tokenizer, max_passage_tokens=24, verbose=True)(frame)
    err = capfd.readouterr().err
    assert "HeadRank" in err and "window" in err, err
