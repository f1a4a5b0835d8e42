"""HeadRankCache: hits return exactly the fresh scores, every score-changing input misses, sqlite is shared safely."""
import multiprocessing
import os
import sqlite3
import threading

import numpy as np
import pandas as pd
import pyterrier as pt
import pytest
import torch

from pyterrier_headrank import HeadRank
from pyterrier_headrank.baselines import ICR, RankGPT
from pyterrier_headrank.cache import HeadRankCache, HeadRankCacheError, candidate_list_key, scorer_fingerprint
from pyterrier_headrank.lora import Adapter, AdapterConfig, attach_lora, lora_state

import fit_data
from conftest import QWEN3_TOKENIZER, tiny_decoder

SETTINGS = dict(max_passage_tokens=24)
QIDS = ["q1", "q2", "q3"]


class Counting:
    """Records the number of candidate lists of every call that ranks lists (``final_scores`` of the attention
    rerankers, ``score_lists`` of RankGPT): what was really scored."""

    def final_scores(self, lists, *args, **kwargs):
        self.__dict__.setdefault("calls", []).append(len(lists))
        return super().final_scores(lists, *args, **kwargs)


class CountingHeadRank(Counting, HeadRank):
    pass


class CountingICR(Counting, ICR):
    pass


class CountingRankGPT(RankGPT):
    def score_lists(self, lists, *args, **kwargs):
        self.__dict__.setdefault("calls", []).append(len(lists))
        return super().score_lists(lists, *args, **kwargs)


def _calls(reranker):
    return reranker.__dict__.get("calls", [])


@pytest.fixture
def counting(tiny_qwen3):
    model, tokenizer = tiny_qwen3
    return CountingHeadRank(model, tokenizer=tokenizer, **SETTINGS)


@pytest.fixture(scope="module")
def fresh(tiny_qwen3):
    """Uncached HeadRank output for the first three queries (the reference every hit must equal)."""
    model, tokenizer = tiny_qwen3
    return HeadRank(model, tokenizer=tokenizer, **SETTINGS)(fit_data.results(QIDS))


def _key(reranker):
    return scorer_fingerprint(reranker)


# ---- hits -----------------------------------------------------------------------------------------------------------
def test_hit_returns_identical_scores_and_scores_nothing(counting, fresh, tmp_path):
    cache = HeadRankCache(counting, tmp_path / "c.sqlite")
    first = cache(fit_data.results(QIDS))
    assert _calls(counting) == [3], "the three misses were scored in one call"
    pd.testing.assert_frame_equal(first, fresh)
    second = cache(fit_data.results(QIDS))
    assert _calls(counting) == [3], "a hit scores nothing"
    pd.testing.assert_frame_equal(second, fresh)
    assert (cache.hits, cache.misses) == (3, 3)
    stats = cache.stats()
    assert stats["entries"] == 3 and stats["hit_rate"] == 0.5 and stats["rejected"] == 0
    reopened = HeadRankCache(counting, tmp_path / "c.sqlite")  # persisted in the file
    pd.testing.assert_frame_equal(reopened(fit_data.results(QIDS)), fresh)
    assert _calls(counting) == [3] and reopened.hits == 3


def test_only_the_missing_lists_are_scored_together(counting, tmp_path):
    cache = HeadRankCache(counting, tmp_path / "c.sqlite")
    cache(fit_data.results(["q1"]))
    out = cache(fit_data.results())
    assert _calls(counting) == [1, 5] and (cache.hits, cache.misses) == (1, 6)
    shuffled = fit_data.results().sample(frac=1.0, random_state=3)  # row order does not matter when rank is given
    pd.testing.assert_frame_equal(cache(shuffled), out)
    assert _calls(counting) == [1, 5]


# ---- misses ---------------------------------------------------------------------------------------------------------
def test_miss_when_the_candidate_order_or_a_text_changes(counting, tiny_qwen3, tmp_path):
    cache = HeadRankCache(counting, tmp_path / "c.sqlite")
    cache(fit_data.results(QIDS))
    swapped = fit_data.results(QIDS)
    swapped.loc[[0, 1], "rank"] = [1, 0]  # q1's first two candidates trade places
    out = cache(swapped)
    assert _calls(counting) == [3, 1]
    model, tokenizer = tiny_qwen3
    pd.testing.assert_frame_equal(out, HeadRank(model, tokenizer=tokenizer, **SETTINGS)(swapped))
    by_score = fit_data.results(QIDS).drop(columns=["rank"])  # the same order, from scores: a hit
    by_score.loc[[0, 1], "score"] = [5.0, 6.0]  # ...but not once the scores swap them
    cache(by_score)
    assert _calls(counting) == [3, 1], "score order equal to swapped rank order: hit"
    edited = fit_data.results(QIDS)
    edited.loc[7, "text"] = edited.loc[7, "text"] + " Extra words."  # one passage of q2 changes
    cache(edited)
    assert _calls(counting) == [3, 1, 1]
    requery = fit_data.results(QIDS).assign(query=lambda f: f["query"].where(f.qid != "q3", "what do wasps make"))
    cache(requery)
    assert _calls(counting) == [3, 1, 1, 1]


@pytest.mark.parametrize("change", [
    dict(max_passage_tokens=16), dict(calibrate=False), dict(heads=[(1, 0), (2, 1)]), dict(dtype="float32"),
    dict(max_window_passages=4, n_anchors=1), dict(text_field="body"),
], ids=lambda change: ",".join(change))
def test_miss_when_a_setting_changes(change, tiny_qwen3, tmp_path):
    model, tokenizer = tiny_qwen3
    path = tmp_path / "c.sqlite"
    frame = fit_data.results(["q1", "q2"]).assign(body=lambda f: f["text"])
    base = CountingHeadRank(model, tokenizer=tokenizer, **SETTINGS)
    HeadRankCache(base, path)(frame)
    changed = CountingHeadRank(model, tokenizer=tokenizer, **{**SETTINGS, **change})
    assert _key(changed) != _key(base)
    out = HeadRankCache(changed, path)(frame)
    assert _calls(changed) == [2]
    pd.testing.assert_frame_equal(out, HeadRank(model, tokenizer=tokenizer, **{**SETTINGS, **change})(frame))


@pytest.mark.parametrize("change", [dict(batch_size=3), dict(device="cpu"), dict(verbose=True)],
                         ids=lambda change: ",".join(change))
def test_batch_size_device_and_verbose_keep_the_key(change, counting, tiny_qwen3, tmp_path):
    model, tokenizer = tiny_qwen3
    HeadRankCache(counting, tmp_path / "c.sqlite")(fit_data.results(["q1"]))
    other = CountingHeadRank(model, tokenizer=tokenizer, **{**SETTINGS, **change})
    assert _key(other) == _key(counting)
    HeadRankCache(other, tmp_path / "c.sqlite")(fit_data.results(["q1"]))
    assert _calls(other) == []


def test_miss_when_the_model_changes(counting, qwen3_tokenizer, tmp_path):
    other_weights = CountingHeadRank(tiny_decoder("qwen3", seed=1), tokenizer=qwen3_tokenizer, **SETTINGS)
    same_weights = CountingHeadRank(tiny_decoder("qwen3", seed=0), tokenizer=qwen3_tokenizer, **SETTINGS)
    HeadRankCache(counting, tmp_path / "c.sqlite")(fit_data.results(["q1"]))
    HeadRankCache(other_weights, tmp_path / "c.sqlite")(fit_data.results(["q1"]))
    HeadRankCache(same_weights, tmp_path / "c.sqlite")(fit_data.results(["q1"]))
    assert (_calls(other_weights), _calls(same_weights)) == ([1], []), "another object with the same weights hits"
    names = [HeadRank(name) for name in ("qwen3-0.6b", "Qwen/Qwen3-0.6B", "Qwen/Qwen3-1.7B")]
    assert len({_key(r) for r in names}) == 3, "a model name is keyed as given, without loading it"
    assert len({_key(r) for r in (HeadRank("qwen3-0.6b"), ICR("qwen3-0.6b"), RankGPT("qwen3-0.6b"))}) == 3
    assert _key(RankGPT("qwen3-0.6b", stride=5)) != _key(RankGPT("qwen3-0.6b"))
    assert _key(ICR("qwen3-0.6b", token_filter=False)) != _key(ICR("qwen3-0.6b"))


def test_list_key_covers_query_docnos_order_and_texts():
    base = candidate_list_key("s", "q", ["a", "b"], ["x", "y"])
    assert base == candidate_list_key("s", "q", ["a", "b"], ["x", "y"])
    others = [candidate_list_key("t", "q", ["a", "b"], ["x", "y"]), candidate_list_key("s", "q2", ["a", "b"], ["x", "y"]),
              candidate_list_key("s", "q", ["b", "a"], ["y", "x"]), candidate_list_key("s", "q", ["a", "c"], ["x", "y"]),
              candidate_list_key("s", "q", ["a", "b"], ["x", "y "]), candidate_list_key("s", "q", ["a", "b"], ["x", None])]
    assert len({base, *others}) == 7


def _adapter(model, scale, seed=0, bump=None):
    """LoRA adapters on layers 1-2 with random B (so that they change the scores), optionally one value bumped."""
    config = AdapterConfig(layers=(1, 2), rank=2)
    state = lora_state(attach_lora(model, config))
    generator = torch.Generator().manual_seed(seed)
    state = {name: value + scale * torch.randn(value.shape, generator=generator) for name, value in state.items()}
    if bump is not None:
        name = sorted(state)[0]
        state[name] = state[name].clone()
        state[name].view(-1)[bump] += 1e-3
    return Adapter(config, state)


def test_miss_when_the_fitted_artifact_changes(tiny_qwen3, tmp_path):
    model, tokenizer = tiny_qwen3
    path, frame = tmp_path / "c.sqlite", fit_data.results(["q1", "q2"])

    def run(heads=((1, 0, 1.0), (2, 1, 1.0)), adapter=None):
        reranker = CountingHeadRank(model, heads=list(heads), tokenizer=tokenizer, **SETTINGS)
        reranker.adapter_ = adapter
        out = HeadRankCache(reranker, path)(frame)
        return _calls(reranker), out

    assert run()[0] == [2]
    assert run(heads=((1, 0, 1.0), (2, 1, 2.0)))[0] == [2], "other head weights"
    calls, adapted = run(adapter=_adapter(model, 0.5))
    assert calls == [2], "an adapter"
    assert run(adapter=_adapter(model, 0.5))[0] == [], "an equal adapter in a new object hits"
    assert run(adapter=_adapter(model, 0.5, bump=3))[0] == [2], "one changed adapter weight"
    plain = run()[1]
    assert not np.allclose(plain.sort_values("docno").score, adapted.sort_values("docno").score)


# ---- baselines ------------------------------------------------------------------------------------------------------
def test_icr_keeps_its_lazy_context_length_setting_and_its_cache_key(tiny_qwen3, tmp_path):
    model, tokenizer = tiny_qwen3
    icr = CountingICR(model, tokenizer=tokenizer, **SETTINGS)
    key = scorer_fingerprint(icr)
    cache = HeadRankCache(icr, tmp_path / "c.sqlite")
    first = cache(fit_data.results(["q1", "q2"]))
    # the context length is read from the model when windows are planned; the setting, and the key, stay as given
    assert icr.max_window_tokens is None and scorer_fingerprint(icr) == key
    assert cache.stats()["entries"] == 2, "one entry per list, under one key"
    pd.testing.assert_frame_equal(cache(fit_data.results(["q1", "q2"])), first)
    again = CountingICR(model, tokenizer=tokenizer, **SETTINGS)  # a new object, as in a new process
    pd.testing.assert_frame_equal(HeadRankCache(again, tmp_path / "c.sqlite")(fit_data.results(["q1", "q2"])), first)
    assert (_calls(icr), _calls(again)) == ([2], [])
    pd.testing.assert_frame_equal(first, ICR(model, tokenizer=tokenizer, **SETTINGS)(fit_data.results(["q1", "q2"])))


def test_rankgpt(tiny_qwen3, tmp_path):
    model, tokenizer = tiny_qwen3
    settings = dict(window_size=4, stride=2, max_new_tokens=3, max_passage_tokens=12)
    rankgpt = CountingRankGPT(model, tokenizer=tokenizer, **settings)
    cache = HeadRankCache(rankgpt, tmp_path / "c.sqlite")
    first = cache(fit_data.results(["q1", "q2"]))
    pd.testing.assert_frame_equal(cache(fit_data.results(["q1", "q2"])), first)
    assert _calls(rankgpt) == [2] and cache.hits == 2
    pd.testing.assert_frame_equal(first, RankGPT(model, tokenizer=tokenizer, **settings)(fit_data.results(["q1", "q2"])))


# ---- two processes --------------------------------------------------------------------------------------------------
def _fill(path, qids, barrier):
    """Run in a spawned process: score ``qids`` one list per call (many small writes), then all together (hits)."""
    from transformers import AutoTokenizer

    reranker = CountingHeadRank(tiny_decoder("qwen3"), tokenizer=AutoTokenizer.from_pretrained(QWEN3_TOKENIZER),
                                **SETTINGS)
    barrier.wait(timeout=240)
    cache = HeadRankCache(reranker, path)  # both processes create the file's tables at the same moment
    for qid in qids:
        cache(fit_data.results([qid]))
    out = cache(fit_data.results(qids))
    assert cache.hits >= len(qids) and cache.misses <= len(qids) and len(out) == 6 * len(qids)


def test_two_processes_write_one_file_at_once(counting, tmp_path):
    path = str(tmp_path / "shared.sqlite")
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)
    workers = [context.Process(target=_fill, args=(path, qids, barrier))
               for qids in (["q1", "q2", "q3", "q4"], ["q4", "q3", "q5", "q6"])]  # q3 and q4 overlap
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=400)
    assert [w.exitcode for w in workers] == [0, 0]
    cache = HeadRankCache(counting, path)
    out = cache(fit_data.results())
    assert _calls(counting) == [] and cache.stats()["entries"] == 6, "every list is stored once and readable"
    pd.testing.assert_frame_equal(out, HeadRank(counting.model, tokenizer=counting.tokenizer, **SETTINGS)(
        fit_data.results()))


# ---- damaged files --------------------------------------------------------------------------------------------------
def test_garbage_file_gives_a_clear_error(counting, tmp_path):
    path = tmp_path / "c.sqlite"
    path.write_bytes(os.urandom(8192))
    with pytest.raises(HeadRankCacheError, match=f"HeadRankCache: cache file '{path}' is corrupt"):
        HeadRankCache(counting, path)
    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE papers (id INTEGER)")
    with pytest.raises(HeadRankCacheError, match="HeadRankCache: .*other.sqlite' is an sqlite database of something"):
        HeadRankCache(counting, other)
    with pytest.raises(ValueError, match="HeadRankCache: the cache path must be a file"):
        HeadRankCache(counting, tmp_path)


def test_file_overwritten_after_use_gives_a_clear_error(counting, tmp_path):
    path = tmp_path / "c.sqlite"
    cache = HeadRankCache(counting, path)
    cache(fit_data.results(["q1"]))
    size = path.stat().st_size
    with open(path, "r+b") as f:  # keep the header, garble every page after the first
        f.seek(4096)
        f.write(os.urandom(size - 4096))
    with pytest.raises(HeadRankCacheError, match=f"HeadRankCache: cache file '{path}'"):
        cache(fit_data.results(["q1"]))
    path.write_bytes(b"not a database at all" * 100)
    with pytest.raises(HeadRankCacheError, match="HeadRankCache: .* is corrupt"):
        cache(fit_data.results(["q1"]))
    assert _calls(counting) == [1]


def test_tampered_score_is_recomputed_not_returned(counting, fresh, tmp_path):
    path = tmp_path / "c.sqlite"
    cache = HeadRankCache(counting, path)
    cache(fit_data.results(QIDS))
    with sqlite3.connect(path) as db:
        key, blob = db.execute("SELECT key, scores FROM headrank_cache_entries ORDER BY key LIMIT 1").fetchone()
        scores = np.frombuffer(blob, dtype="<f8").copy()
        scores[0] += 1.0
        db.execute("UPDATE headrank_cache_entries SET scores = ? WHERE key = ?", (scores.tobytes(), key))
        truncated = db.execute("SELECT key, scores FROM headrank_cache_entries ORDER BY key LIMIT 1 OFFSET 1").fetchone()
        db.execute("UPDATE headrank_cache_entries SET scores = ? WHERE key = ?", (truncated[1][:8], truncated[0]))
    with pytest.warns(UserWarning, match="HeadRankCache: the entry for qid .* fails its checksum"):
        out = cache(fit_data.results(QIDS))
    pd.testing.assert_frame_equal(out, fresh)
    assert _calls(counting) == [3, 2] and cache.rejected == 2
    pd.testing.assert_frame_equal(cache(fit_data.results(QIDS)), fresh)  # repaired: hits again
    assert _calls(counting) == [3, 2]


# ---- frames ---------------------------------------------------------------------------------------------------------
def test_empty_frame(counting, tmp_path):
    cache = HeadRankCache(counting, tmp_path / "c.sqlite")
    out = cache(pd.DataFrame(columns=["qid", "query", "docno", "text"]))
    assert len(out) == 0 and {"score", "rank"} <= set(out.columns)
    assert _calls(counting) == [] and (cache.hits, cache.misses) == (0, 0)


def test_bad_input_names_headrankcache(counting, tmp_path):
    cache = HeadRankCache(counting, tmp_path / "c.sqlite")
    with pytest.raises(TypeError, match="HeadRankCache: expects a reranker"):
        HeadRankCache(object(), tmp_path / "x.sqlite")
    with pytest.raises(TypeError, match="HeadRankCache: expected a pandas DataFrame"):
        cache.transform(["q1"])
    with pytest.raises(ValueError, match=r"HeadRankCache: the input frame lacks column\(s\) \['text'\]"):
        cache(fit_data.results(["q1"]).drop(columns=["text"]))
    no_qid = fit_data.results(["q1"]).astype({"qid": object})
    no_qid.loc[2, "qid"] = None
    with pytest.raises(ValueError, match="HeadRankCache: 1 row"):
        cache(no_qid)
    two_queries = fit_data.results(["q1"])
    two_queries.loc[2, "query"] = "another query"
    with pytest.raises(ValueError, match="HeadRankCache: qid 'q1' has 2 different query texts"):
        cache(two_queries)
    with pytest.raises(ValueError, match="HeadRankCache: the query of qid 'q1' is empty"):
        cache(fit_data.results(["q1"]).assign(query="  "))
    with pytest.raises(TypeError, match=r"HeadRankCache: cannot key .*\*transformers"):
        HeadRankCache(counting % 3, tmp_path / "c.sqlite")(fit_data.results(["q1"]))
    assert _calls(counting) == []


class Truncating(pt.Transformer):
    """Breaks the contract: returns only the top three candidates of each query."""

    def __init__(self, reranker):
        self.reranker = reranker

    def transform(self, inp):
        return self.reranker(inp).groupby("qid").head(3)


def test_a_reranker_that_drops_candidates_is_refused(counting, tmp_path):
    with pytest.raises(ValueError, match="HeadRankCache: Truncating returned 3 rows for 6 candidates"):
        HeadRankCache(Truncating(counting), tmp_path / "c.sqlite")(fit_data.results(["q1"]))
    assert HeadRankCache(counting, tmp_path / "c.sqlite").stats()["entries"] == 0, "nothing was stored"


def test_verbose_prints_one_line_per_call(counting, tmp_path, capsys):
    cache = HeadRankCache(counting, tmp_path / "c.sqlite", verbose=True)
    cache(fit_data.results(["q1"]))
    cache(fit_data.results(["q1"]))
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("HeadRankCache: 1 lists, 0 hits, 1 misses")
    assert lines[1].startswith("HeadRankCache: 1 lists, 1 hits, 0 misses")


# ---- PyTerrier ------------------------------------------------------------------------------------------------------
def test_inside_pt_experiment(counting, tmp_path):
    first_stage = pt.Transformer.from_df(fit_data.results())
    cache = HeadRankCache(counting, tmp_path / "c.sqlite")
    plain = HeadRank(counting.model, tokenizer=counting.tokenizer, **SETTINGS)
    table = pt.Experiment([first_stage >> cache, first_stage >> cache, first_stage >> plain], fit_data.topics(),
                          fit_data.qrels(), eval_metrics=["ndcg_cut_5", "map"], names=["miss", "hit", "plain"])
    assert _calls(counting) == [6] and (cache.hits, cache.misses) == (6, 6)
    assert table["ndcg_cut_5"].nunique() == 1 and table["map"].nunique() == 1
    assert pt.inspect.transformer_inputs(cache) == [["qid", "query", "docno", "text"]]
    assert repr(cache).startswith("HeadRankCache(HeadRank(")


def _open_store(path, barrier, errors):
    from pyterrier_headrank.cache import ScoreStore

    barrier.wait()
    try:
        ScoreStore(path)
    except Exception as err:  # collected, then asserted empty
        errors.append(err)


def test_many_connections_opening_a_new_file_at_once(tmp_path):
    """sqlite answers "locked" at once (without its busy handler) when two connections switch a new file to WAL at
    the same moment; opening must wait its turn instead of failing (this failed one CI run of the two-process test)."""
    for attempt in range(5):
        path = tmp_path / f"new-{attempt}.sqlite"
        barrier, errors = threading.Barrier(8), []

        threads = [threading.Thread(target=_open_store, args=(path, barrier, errors)) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []


def test_a_wrapped_transformer_that_fuses_is_keyed_on_the_first_stage_scores(tiny_qwen3, tmp_path):
    """ScoreFusion reads the incoming scores: the same candidates in the same order with other first-stage scores
    must miss and equal an uncached run; a listwise reranker without fusion hits (its scores depend on the order)."""
    from pyterrier_headrank.fusion import ScoreFusion

    model, tokenizer = tiny_qwen3
    fusion = ScoreFusion(CountingHeadRank(model, tokenizer=tokenizer, **SETTINGS), 0.5)
    cache = HeadRankCache(fusion, tmp_path / "c.sqlite")
    frame = fit_data.results(["q1"])
    cache(frame)
    rescaled = frame.assign(score=frame.score * 10)
    got = cache(rescaled)
    assert (cache.hits, cache.misses) == (0, 2)
    want = fusion(rescaled)
    np.testing.assert_allclose(got.sort_values("docno").score, want.sort_values("docno").score, rtol=1e-12)
    plain = HeadRankCache(CountingHeadRank(model, tokenizer=tokenizer, **SETTINGS), tmp_path / "d.sqlite")
    plain(frame), plain(rescaled)
    assert (plain.hits, plain.misses) == (1, 1)


def test_a_score_column_of_text_is_refused_by_name(counting, tmp_path):
    text_scores = fit_data.results(["q1"]).assign(score=lambda f: f.score.astype(str))
    with pytest.raises(ValueError, match="HeadRankCache: the 'score' column has dtype .*not numbers"):
        HeadRankCache(counting, tmp_path / "c.sqlite")(text_scores)
    with pytest.raises(ValueError, match="HeadRank: the 'score' column has dtype"):
        counting(text_scores)
    assert _calls(counting) == []
