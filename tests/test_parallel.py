"""Rerankers pickle without their loaded model and give the same results under PyTerrier's .parallel()."""
import pickle

import numpy as np
import pytest

from pyterrier_headrank import HeadRank

import fit_data


def test_pickles_without_the_loaded_model(smollm2):
    reranker = HeadRank("smollm2-135m")
    assert len(reranker.head_set) > 0  # loads the model
    data = pickle.dumps(reranker)
    assert len(data) < 100_000  # a name, settings and heads: not 135M parameters
    copy = pickle.loads(data)
    frame = fit_data.results()[lambda f: f["qid"] == "q1"]
    np.testing.assert_allclose(copy(frame)["score"], reranker(frame)["score"], rtol=1e-5)


def test_fitted_reranker_arrives_intact(smollm2):
    fitted = HeadRank.from_pretrained("smollm2-135m-scifact")
    frame = fit_data.results()[lambda f: f["qid"].isin(["q1", "q2"])]
    expected = fitted(frame)
    copy = pickle.loads(pickle.dumps(fitted))
    assert copy.heads == fitted.heads
    np.testing.assert_allclose(copy(frame)["score"], expected["score"], rtol=1e-5)


def test_joblib_parallel_equals_sequential(tiny_qwen3):
    pytest.importorskip("pyterrier_alpha")
    pytest.importorskip("joblib")
    model, tokenizer = tiny_qwen3
    reranker = HeadRank(model, tokenizer=tokenizer, max_passage_tokens=24)
    frame = fit_data.results()
    sequential = reranker(frame).sort_values(["qid", "docno"]).reset_index(drop=True)
    with pytest.warns(UserWarning, match="experimental"):
        parallel = reranker.parallel(2, backend="joblib")
    out = parallel(frame).sort_values(["qid", "docno"]).reset_index(drop=True)
    assert list(out["docno"]) == list(sequential["docno"]) and list(out["rank"]) == list(sequential["rank"])
    np.testing.assert_allclose(out["score"], sequential["score"], rtol=1e-5, atol=1e-7)
