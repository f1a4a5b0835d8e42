"""Concurrent calls: one reranker from several threads, and rerankers with different stop layers on one model."""
import threading

import numpy as np

from pyterrier_headrank import HeadRank, HeadSet, compat

import fit_data

ROUNDS = 12


def _run_together(calls):
    """Run each zero-argument call in its own thread, all released at once, ROUNDS times; results per call."""
    start = threading.Barrier(len(calls))
    results = [[] for _ in calls]
    errors = []

    def work(i, call):
        try:
            for _ in range(ROUNDS):
                start.wait()
                results[i].append(call())
        except Exception as err:  # noqa: BLE001 - reported below with its type
            errors.append(err)
            start.abort()

    threads = [threading.Thread(target=work, args=(i, call)) for i, call in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, [f"{type(e).__name__}: {e}" for e in errors]
    return results


def _scores(reranker):
    return lambda: reranker(fit_data.results()).sort_values(["qid", "docno"])["score"].to_numpy()


def test_one_reranker_from_several_threads(tiny_qwen3):
    model, tokenizer = tiny_qwen3
    reranker = HeadRank(model, tokenizer=tokenizer, max_passage_tokens=24)
    expected = _scores(reranker)()
    for runs in _run_together([_scores(reranker)] * 4):
        for scores in runs:
            np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-7)


def test_rerankers_with_different_stop_layers_share_one_model(tiny_qwen3):
    """A shallow head set stops the pass early; a concurrent deep one must still reach its own layers."""
    model, tokenizer = tiny_qwen3
    before = [c._attn_implementation for c in compat.attention_configs(model)]
    shallow = HeadRank(model, HeadSet(((0, 1), (1, 2))), tokenizer=tokenizer, max_passage_tokens=24)
    deep = HeadRank(model, HeadSet(((2, 0), (3, 3))), tokenizer=tokenizer, max_passage_tokens=24)
    expected = [_scores(shallow)(), _scores(deep)()]
    results = _run_together([_scores(shallow), _scores(deep), _scores(shallow), _scores(deep)])
    for i, runs in enumerate(results):
        for scores in runs:
            np.testing.assert_allclose(scores, expected[i % 2], rtol=1e-5, atol=1e-7)
    assert [c._attn_implementation for c in compat.attention_configs(model)] == before == ["sdpa"]
