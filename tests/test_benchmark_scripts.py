"""The benchmark scripts run end to end on small settings (their figures are measured by running them in full)."""
import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT, SHARED, need


def _run(script: str, *args: str, tmp_path) -> str:
    need(SHARED / "data" / "dl21-passage-bm25top100" / "candidates.jsonl")
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args, "--out-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=600, cwd=ROOT,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "HEADRANK_SHARED": str(SHARED)})
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_gpu_benchmark_code_path_on_the_cpu(tmp_path):
    out = _run("gpu_speed.py", "--smoke", "--device", "cpu", "--models", "qwen3-0.6b", "--sizes", "4", "6",
               "--queries", "2", tmp_path=tmp_path)
    report = json.loads((tmp_path / "gpu_speed.json").read_text())
    assert [r["candidates"] for r in report["rows"]] == [4, 6]
    assert all(r["headrank"]["ms_per_query"] > 0 and r["rankgpt_style"]["tokens_generated_per_query"] > 0
               for r in report["rows"])
    assert "| qwen3-0.6b | 6 |" in out


def test_gpu_benchmark_says_no_gpu_where_there_is_none(tmp_path):
    import torch
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the benchmark measures instead of saying there is none")
    out = _run("gpu_speed.py", tmp_path=tmp_path)
    assert "no GPU in this session" in out and "nothing is estimated" in out
    assert json.loads((tmp_path / "gpu_speed.json").read_text())["rows"] == []


def test_scores_rebuilt_from_a_stored_profile_equal_what_headrank_returns(tiny_qwen3):
    """effectiveness.py, default_fit.py and transfer.py score head sets from one all-heads pass per list; that must
    be exactly HeadRank's score (heads, weights, slot correction, prompt order, averaging)."""
    need(SHARED / "data" / "dl21-passage-bm25top100" / "candidates.jsonl")
    import numpy as np

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from _profiles import Profile, system_scores
    from head_profiles import profile_collection

    from pyterrier_headrank import HeadRank, HeadSet

    model, tokenizer = tiny_qwen3
    heads = HeadSet(((0, 1), (1, 2), (1, 0)), (0.5, 2.0, 1.0))
    bias = tuple(np.linspace(0.0, 0.01, 20))
    profiles = {}
    for order in ("first-stage", "reversed"):
        reader = HeadRank(model, tokenizer=tokenizer, heads=[(0, 0)], max_passage_tokens=24, order=order)
        data = profile_collection(reader, "dl21-bm25", order, k=5, max_layer=1, verbose=False)
        profiles[order] = Profile(data["qids"], data["docnos"], data["first_stage"], data["labels"],
                                  data["calibrated"], data["raw"], data["num_layers"], data["num_heads"],
                                  order == "reversed")
    lists = [(q, list(texts)) for q, texts in _first_lists(5)]
    for order, views in (("first-stage", [profiles["first-stage"]]), ("reversed", [profiles["reversed"]]),
                         ("averaged", [profiles["first-stage"], profiles["reversed"]])):
        reranker = HeadRank(model, tokenizer=tokenizer, heads=heads, max_passage_tokens=24, order=order,
                            slot_bias=bias)
        expected = reranker.score_lists(lists)
        rebuilt = system_scores(views, heads, bias)[:len(lists)]
        for want, got in zip(expected, rebuilt):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-7, err_msg=order)


def _first_lists(k: int):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from _common import candidate_lists, grouped

    frame, _ = candidate_lists("dl21-bm25", k)
    return [(query, texts) for _, query, _, texts, _ in grouped(frame)[:4]]


def test_long_list_consistency_and_merged_runs_on_known_window_scores():
    """long_lists.py: consistency is the Spearman correlation over the passages two consecutive windows share, and
    its runs rank the merged (and fused) scores of every candidate."""
    import numpy as np

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from long_lists import consistency, runs_of

    plan = [[0, 1, 2, 3, 4], [0, 1, 3, 4, 5, 6]]  # anchors 0, 1; passages 3, 4 carried over
    agreeing = [np.array([5.0, 4.0, 3.0, 2.0, 1.0]), np.array([9.0, 8.0, 7.0, 6.0, 0.0, -1.0])]
    rho, pairs, shared = consistency([(plan, agreeing)])
    assert (rho, pairs, shared) == (1.0, 1, 4.0)
    flipped = [agreeing[0], np.array([6.0, 7.0, 8.0, 9.0, 0.0, -1.0])]
    assert consistency([(plan, flipped)])[0] == -1.0
    lists = [("q1", "query", [f"d{i}" for i in range(7)], [""] * 7, np.arange(7, 0, -1.0))]
    runs = runs_of(lists, [(plan, agreeing)], "shared", 2, 0.5, "long")
    attention, fused = runs["long, attention only"], runs["long, fused"]
    assert sorted(attention["rank"]) == list(range(7)) and len(fused) == 7
    assert attention.sort_values("rank").docno.iloc[0] == "d0"


def test_benchmarks_keep_only_the_previous_figures_they_did_not_measure_again(tmp_path):
    import pandas as pd

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from _common import with_previous

    old = pd.DataFrame({"model": ["a", "a", "b"], "collection": ["x", "x", "x"], "order": ["-", "reversed", "-"],
                        "band": ["first stage", "late", "first stage"], "ndcg10": [0.1, 0.2, 0.3]})
    old.to_csv(tmp_path / "previous.csv", index=False)
    new = pd.DataFrame({"model": ["a"], "collection": ["x"], "order": ["reversed"], "band": ["late"], "ndcg10": [0.25]})
    key = ["model", "collection", "order", "band"]
    merged, kept = with_previous(new, tmp_path / "previous.csv", key)
    assert kept == 2 and len(merged) == 3
    assert merged.set_index(["model", "order"]).loc[("a", "reversed"), "ndcg10"] == 0.25  # measured again: new
    assert with_previous(new, tmp_path / "absent.csv", key) == (new, 0)
    pd.DataFrame({"collection": ["x", "y"], "overlap": [0, 10], "delta": [0.1, 0.2]}).to_csv(tmp_path / "long.csv",
                                                                                       index=False)
    again = pd.DataFrame({"collection": ["x"], "overlap": [0], "delta": [0.3]})
    merged, kept = with_previous(again, tmp_path / "long.csv", ["collection", "overlap"])
    assert kept == 1 and merged.overlap.tolist() == [0, 10] and merged.delta.tolist() == [0.3, 0.2]


def test_effectiveness_reuses_stored_runs_only_under_the_settings_they_were_made_with(tmp_path, monkeypatch):
    import pandas as pd

    import pyterrier_headrank.heads

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import effectiveness

    monkeypatch.setattr(effectiveness, "RUNS", tmp_path)
    fit = effectiveness.shipped("smollm2-135m")
    run = pd.DataFrame({"qid": ["1", "1"], "docno": ["a", "b"], "score": [2.0, 1.0], "rank": [0, 1]})
    effectiveness.store_runs("smollm2-135m", "cacm", {"first stage": run}, fit)
    (got,) = effectiveness.stored_runs("smollm2-135m", "cacm", ("first stage",), fit).values()
    assert got.docno.tolist() == ["a", "b"] and got.score.tolist() == [2.0, 1.0] and set(got.name) == {"first stage"}
    assert effectiveness.stored_runs("smollm2-135m", "cacm", ("ICR",), fit) is None  # never stored
    monkeypatch.setattr(pyterrier_headrank.heads, "TRAINING_FREE_LAYERS", (0.0, 0.25))  # other settings now
    assert effectiveness.stored_runs("smollm2-135m", "cacm", ("first stage",), fit) is None
    effectiveness.store_runs("smollm2-135m", "vaswani", {"first stage": run}, fit)
    assert not (tmp_path / "smollm2-135m" / "cacm.first-stage.res.gz").exists()  # runs of other settings: removed


def test_long_lists_scores_each_cascade_pool_once_for_both_kinds():
    """The attention-only and fused cascades pick the same pools; the second must reuse the first's pool scores."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from long_lists import remembered

    calls = []

    def score_lists(lists, desc=None):
        calls.append(lists)
        return [[float(len(p))] * len(p) for _, p in lists]

    memo = {}
    first, second = remembered(score_lists, memo), remembered(score_lists, memo)
    pools = [("q", ["a", "b"]), ("r", ["c"])]
    assert first(pools) == second([("q", ("a", "b")), ("r", ["c"])]) == [[2.0, 2.0], [1.0]]
    assert len(calls) == 1
    second([("q", ["a"])])
    assert len(calls) == 2


def test_profiles_copy_lists_read_before_and_compute_the_others(tiny_qwen3, tmp_path):
    """head_profiles.py copies a list's masses from another stored profile of the same prompt (scifact-100 inside
    scifact) instead of recomputing them; copied and recomputed lists must equal a fresh profile."""
    need(SHARED / "data" / "dl21-passage-bm25top100" / "candidates.jsonl")
    import numpy as np

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from head_profiles import passes_in, profile_collection

    from pyterrier_headrank import HeadRank

    model, tokenizer = tiny_qwen3
    reader = HeadRank(model, tokenizer=tokenizer, heads=[(0, 0)], max_passage_tokens=24, order="reversed")
    fresh = profile_collection(reader, "dl21-bm25", "reversed", k=5, max_layer=1, verbose=False)
    np.savez_compressed(tmp_path / "stored.npz", **fresh)
    heads = fresh["calibrated"].shape[1]
    stored = passes_in(tmp_path / "stored.npz", heads)
    assert passes_in(tmp_path / "stored.npz", heads + 1) == {}  # a shallower profile cannot serve a deeper one
    first = (str(fresh["queries"][0]), tuple(fresh["docnos"][0]))
    del stored[first]
    again = profile_collection(reader, "dl21-bm25", "reversed", k=5, max_layer=1, verbose=False, reuse=stored)
    assert again["copied"] == len(fresh["qids"]) - 1
    for key in ("calibrated", "raw", "labels", "first_stage"):
        np.testing.assert_allclose(again[key], fresh[key], rtol=1e-5, err_msg=key)


def test_weight_levers_pair_weights_line_up_with_the_pairs():
    """weight_levers.py weighs the rows of ``pair_differences``; its weights must be one per row, in the same order."""
    import numpy as np

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from weight_levers import pair_weights

    from pyterrier_headrank.head_weights import pair_differences

    grades = [np.array([0, 2, 1] + [0] * 9 + [1]), np.array([1, 0, 0])]
    masses = [np.vstack([np.arange(len(g)), np.full(len(g), k)]).astype(float) for k, g in enumerate(grades)]
    rows = pair_differences(masses, grades)
    pairs = [(k, b, w) for k, g in enumerate(grades) for b in range(len(g)) for w in range(len(g)) if g[b] > g[w]]
    np.testing.assert_array_equal(rows[:, 0], [b - w for _, b, w in pairs])  # the order weight_levers assumes
    lam, gain, per_list = (pair_weights(grades, s) for s in ("lambda", "gain gap", "per list"))
    assert len(lam) == len(gain) == len(per_list) == len(pairs)
    beyond_ten = np.array([b >= 10 and w >= 10 for _, b, w in pairs])
    assert beyond_ten.any() and np.all(lam[beyond_ten] == 0) and np.all(lam[~beyond_ten] > 0)
    gaps = np.array([2.0 ** grades[k][b] - 2.0 ** grades[k][w] for k, b, w in pairs])
    np.testing.assert_allclose(gain, gaps / gaps.mean())
    owner = np.array([k for k, _, _ in pairs])
    assert per_list[owner == 0].sum() == pytest.approx(per_list[owner == 1].sum())


def test_effectiveness_leaves_an_unchanged_stored_run_byte_for_byte(tmp_path):
    """A committed run rewritten with the same rows must keep its bytes (gzip stamps its write time); a changed run
    replaces it."""
    import time

    import pandas as pd

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from effectiveness import write_run

    run = pd.DataFrame({"qid": ["1", "1"], "docno": ["a", "b"], "score": [2.0, 1.0], "rank": [0, 1]})
    path = tmp_path / "x.res.gz"
    write_run(run, path)
    before = path.read_bytes()
    time.sleep(1.1)
    write_run(run, path)
    assert path.read_bytes() == before
    write_run(run.assign(score=[1.0, 2.0], rank=[1, 0]), path)
    assert path.read_bytes() != before


def test_training_lists_pool_over_profiles_read_to_different_depths():
    """A profile made with --max-layer reads fewer heads; pooled with a full-depth one, both are cut to the heads
    they share (layer-major), so a recipe within those layers fits on all their lists."""
    import numpy as np

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from _profiles import Profile
    from default_fit import pooled_profile

    def profile(layers_read, seed):
        rng = np.random.default_rng(seed)
        cal = rng.random((3, layers_read * 2, 4)).astype(np.float32)
        return Profile(np.array(["q1", "q2", "q3"], dtype=object), np.full((3, 4), "d", dtype=object),
                       rng.random((3, 4)), rng.integers(0, 2, (3, 4)), cal, cal, 4, 2, True)

    deep, shallow = profile(4, 0), profile(3, 1)
    pooled = pooled_profile({"a": deep, "b": shallow}, {"a": np.ones(3, bool), "b": np.array([True, False, True])})
    assert pooled.calibrated.shape == (5, 6, 4) and pooled.max_layer == 2
    np.testing.assert_array_equal(pooled.calibrated[:3], deep.calibrated[:, :6])
    np.testing.assert_array_equal(pooled.calibrated[3:], shallow.calibrated[[0, 2]])
    assert list(pooled.qids) == ["a:q1", "a:q2", "a:q3", "b:q1", "b:q3"]


def test_align_pooled_fuses_by_docno_and_names_significant_changes():
    """Aligned scores come in prompt order: fusion must pair them with the first stage by docno; the verdict names
    the collections where alignment is significantly better or worse than the same heads without it."""
    import numpy as np
    import pandas as pd

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from align_pooled import ALIGNED, FUSED, WEIGHTED, fused, verdict

    from pyterrier_headrank.fusion import fuse_scores

    first = {"c:1": (["a", "b", "c"], np.array([3.0, 2.0, 1.0]))}
    reversed_attention = {"c:1": (["c", "b", "a"], np.array([0.9, 0.1, 0.4]))}
    (docnos, scores), = fused(first, reversed_attention, 0.5).values()
    assert docnos == ["a", "b", "c"]
    np.testing.assert_allclose(scores, fuse_scores(np.array([3.0, 2.0, 1.0]), np.array([0.4, 0.1, 0.9]), 0.5))

    rows = [("x", WEIGHTED, 0.50, np.nan), ("x", ALIGNED, 0.40, 0.01), ("y", WEIGHTED, 0.50, np.nan),
            ("y", ALIGNED, 0.60, 0.02), ("z", WEIGHTED, 0.50, np.nan), ("z", ALIGNED, 0.70, 0.30)]
    rows += [(c, s + FUSED, v, p) for c, s, v, p in rows]
    table = pd.DataFrame(rows, columns=["collection", "system", "ndcg10", "p_vs_weighted"])
    means = table.groupby("system", sort=False).ndcg10.mean().reset_index().assign(collection="mean")
    lines = verdict(pd.concat([table, means], ignore_index=True))
    assert lines[0].startswith("- attention only: alignment +0.0667 on average")
    assert "significantly better (p(align) < 0.05) on y, significantly worse on x." in lines[0]


def test_fusion_weight_is_chosen_against_each_collections_own_qrels():
    """Pooled lists of two collections share the query id "q1" with opposite judgments; the fusion weight is scored
    against qrels prefixed by collection, so attention that is right in both chooses weight 0 (a first stage that is
    wrong in both would win nothing) and every judged row is kept."""
    import numpy as np
    import pandas as pd

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from _profiles import Profile
    from default_fit import fusion_for, prefixed_qrels

    def view(first_stage):
        cal = np.zeros((1, 2, 4), np.float32)
        return Profile(np.array(["q1"], dtype=object), np.array([["d0", "d1", "d2", "d3"]], dtype=object),
                       np.array([first_stage], float), np.zeros((1, 4), int), cal, cal, 1, 2, True)

    qrels = {"a": pd.DataFrame({"qid": ["q1"], "docno": ["d0"], "label": [1]}),
             "b": pd.DataFrame({"qid": ["q1"], "docno": ["d3"], "label": [1]})}
    data = {"a": {"base": view([1.0, 2.0, 3.0, 4.0])}, "b": {"base": view([4.0, 3.0, 2.0, 1.0])}}
    oof = {"a": [np.array([4.0, 3.0, 2.0, 1.0])], "b": [np.array([1.0, 2.0, 3.0, 4.0])]}
    pooled = prefixed_qrels(qrels)
    assert sorted(zip(pooled.qid, pooled.docno)) == [("a:q1", "d0"), ("b:q1", "d3")]
    weight, table = fusion_for(data, qrels, oof)
    assert weight == 0.0 and table.ndcg10.iloc[0] == 1.0 and table.ndcg10.iloc[-1] < 0.5


def test_compare_accepts_a_stored_run_only_over_the_same_candidate_lists(tmp_path):
    """``compare.py --stored`` adds a row from a run made elsewhere; a run over other candidates (one docno swapped)
    or other queries would compare different lists, so it stops and names the first query that differs."""
    import pandas as pd
    import pyterrier as pt

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from compare import parse_stored, stored_run

    base = pd.DataFrame({"qid": ["1", "1", "2", "2"], "docno": ["a", "b", "c", "d"], "score": [4.0, 3.0, 2.0, 1.0],
                         "rank": [0, 1, 0, 1]})
    same = base.assign(score=[1.0, 2.0, 3.0, 4.0], rank=[1, 0, 1, 0])
    pt.io.write_results(same, str(tmp_path / "same.res.gz"))
    pt.io.write_results(same.assign(docno=["a", "b", "c", "x"]), str(tmp_path / "swapped.res.gz"))
    pt.io.write_results(same[same.qid == "1"], str(tmp_path / "short.res.gz"))
    read = stored_run(str(tmp_path / "same.res.gz"), base, "BM25 >> S")
    assert sorted(zip(read.qid, read.docno, read.score)) == [("1", "a", 1.0), ("1", "b", 2.0), ("2", "c", 3.0),
                                                            ("2", "d", 4.0)]
    with pytest.raises(SystemExit, match="1 of 2 queries differ \\(first: qid 2\\)"):
        stored_run(str(tmp_path / "swapped.res.gz"), base, "BM25 >> S")
    with pytest.raises(SystemExit, match="1 of 2 queries differ \\(first: qid 2\\)"):
        stored_run(str(tmp_path / "short.res.gz"), base, "BM25 >> S")
    spec = f"dl21=HeadRank (x=y)={tmp_path / 'same.res.gz'}"
    assert parse_stored([spec]) == {"dl21": [("HeadRank (x=y)", str(tmp_path / "same.res.gz"))]}
    with pytest.raises(SystemExit, match="is not COLLECTION=NAME=PATH"):
        parse_stored(["dl21=only-a-name"])
    with pytest.raises(SystemExit, match="does not exist"):
        parse_stored([f"dl21=S={tmp_path / 'missing.res.gz'}"])
