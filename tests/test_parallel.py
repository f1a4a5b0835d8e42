"""Rerankers pickle without their loaded model and give the same results under PyTerrier's .parallel() (joblib and
Ray); devices.py gives each worker its own device (tested on CPU, with the GPU count faked)."""
import pickle
import time

import numpy as np
import pyterrier as pt
import pytest
import torch

from pyterrier_headrank import HeadRank, HeadRankCache
from pyterrier_headrank.baselines import ICR, RankGPT
from pyterrier_headrank.devices import DeviceParallel, on_device, visible_gpus, worker_device

import fit_data
from conftest import local_ray, tiny_decoder


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


@pytest.fixture(scope="module")
def fresh_tiny(qwen3_tokenizer):
    """A tiny Qwen3 of this module's own. The session's shared one may have run with ``output_attentions=True`` in
    other tests, which leaves transformers' output-capturing hooks (local functions) on it: such a model object
    cannot be pickled, whatever the reranker does (a model given by name or folder is unaffected)."""
    return tiny_decoder("qwen3"), qwen3_tokenizer


def test_joblib_parallel_equals_sequential(fresh_tiny):
    pytest.importorskip("pyterrier_alpha")
    pytest.importorskip("joblib")
    model, tokenizer = fresh_tiny
    reranker = HeadRank(model, tokenizer=tokenizer, max_passage_tokens=24)
    frame = fit_data.results()
    sequential = reranker(frame).sort_values(["qid", "docno"]).reset_index(drop=True)
    with pytest.warns(UserWarning, match="experimental"):
        parallel = reranker.parallel(2, backend="joblib")
    out = parallel(frame).sort_values(["qid", "docno"]).reset_index(drop=True)
    assert list(out["docno"]) == list(sequential["docno"]) and list(out["rank"]) == list(sequential["rank"])
    np.testing.assert_allclose(out["score"], sequential["score"], rtol=1e-5, atol=1e-7)


# ---- every transformer pickles ------------------------------------------------------------------------------------
SETTINGS = dict(max_passage_tokens=24)


def _tiny(kind, tiny, **kw):
    model, tokenizer = tiny
    if kind == "RankGPT":
        return RankGPT(model, tokenizer=tokenizer, window_size=6, stride=3, max_new_tokens=6, **SETTINGS, **kw)
    return {"HeadRank": HeadRank, "ICR": ICR}[kind](model, tokenizer=tokenizer, **SETTINGS, **kw)


def _sorted(frame):
    return frame.sort_values(["qid", "docno"]).reset_index(drop=True)


def _assert_same(out, expected):
    """Same rows, docnos and ranks, scores within 1e-5: what a parallel run must give back."""
    out, expected = _sorted(out), _sorted(expected)
    assert list(out["qid"]) == list(expected["qid"]) and list(out["docno"]) == list(expected["docno"])
    assert list(out["rank"]) == list(expected["rank"])
    np.testing.assert_allclose(out["score"], expected["score"], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("kind", ["HeadRank", "ICR", "RankGPT"])
def test_round_trip_drops_the_engine_and_scores_the_same(fresh_tiny, kind):
    reranker = _tiny(kind, fresh_tiny)
    frame = fit_data.results(["q1"])
    expected = reranker(frame)                      # loads, so that there is an engine to leave behind
    assert reranker._loaded is not None
    copy = pickle.loads(pickle.dumps(reranker))
    assert type(copy) is type(reranker) and copy._loaded is None and reranker._loaded is not None
    settings = {k: v for k, v in vars(reranker).items() if k not in ("_loaded", "model", "tokenizer", "format_stats")}
    assert {k: vars(copy)[k] for k in settings} == settings
    _assert_same(copy(frame), expected)


@pytest.mark.parametrize("kind", ["HeadRank", "ICR", "RankGPT"])
def test_a_model_given_by_name_travels_as_its_name(kind):
    cls = {"HeadRank": HeadRank, "ICR": ICR, "RankGPT": RankGPT}[kind]
    reranker = cls("qwen3-0.6b", device="cpu")     # a hub alias: nothing is loaded or downloaded until first use
    data = pickle.dumps(reranker)
    assert len(data) < 20_000
    assert pickle.loads(data).model == "qwen3-0.6b"


# ---- Ray ----------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ray_cluster():
    """A local two-CPU Ray cluster for this module's Ray tests (``conftest.local_ray``); shut down after them."""
    started = time.perf_counter()
    with local_ray() as ray:
        print(f"ray.init: {time.perf_counter() - started:.1f}s")
        yield ray


def _timed(what, fn, *args):
    started = time.perf_counter()
    out = fn(*args)
    print(f"{what}: {time.perf_counter() - started:.1f}s")
    return out


@pytest.mark.parametrize("kind", ["HeadRank", "ICR"])
def test_ray_parallel_equals_sequential(fresh_tiny, ray_cluster, kind):
    reranker = _tiny(kind, fresh_tiny)
    frame = fit_data.results()
    sequential = _timed(f"{kind} sequential", reranker, frame)
    with pytest.warns(UserWarning, match="experimental"):
        parallel = reranker.parallel(2, backend="ray")
    out = _timed(f"{kind} .parallel(2, backend='ray')", parallel, frame)
    assert set(out["qid"]) == set(fit_data.PASSAGES)
    _assert_same(out, sequential)


def test_fitted_reranker_arrives_intact_in_ray_workers(fresh_tiny, ray_cluster):
    """Heads and adapter travel: a worker's scores equal the fitted reranker's, and differ from the bare heads'."""
    reranker = _tiny("HeadRank", fresh_tiny).fit(fit_data.results(), fit_data.qrels(), k=2, max_layer=2, align=True,
                                                 epochs=1, cv_folds=0, verbose=False)
    assert reranker.adapter_ is not None and len(reranker.heads) == 2
    copy = pickle.loads(pickle.dumps(reranker))
    assert copy.heads == reranker.heads
    assert copy.adapter_.weights.keys() == reranker.adapter_.weights.keys()
    assert all(torch.equal(copy.adapter_.weights[k], v) for k, v in reranker.adapter_.weights.items())
    frame = fit_data.results()
    sequential = reranker(frame)
    with pytest.warns(UserWarning, match="experimental"):
        out = _timed("fitted HeadRank .parallel(2, backend='ray')", reranker.parallel(2, backend="ray"), frame)
    _assert_same(out, sequential)
    no_adapter = _tiny("HeadRank", fresh_tiny, heads=reranker.heads)(frame)
    assert not np.allclose(_sorted(no_adapter)["score"], _sorted(sequential)["score"])  # the adapter was used


# ---- one worker per device ----------------------------------------------------------------------------------------
@pytest.fixture
def gpus(monkeypatch):
    """Fake the number of visible GPUs (the assignment logic only reads the count)."""
    def fake(count):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    return fake


def test_worker_device_round_robin_over_visible_gpus(gpus):
    gpus(3)
    assert [worker_device(i) for i in range(5)] == ["cuda:0", "cuda:1", "cuda:2", "cuda:0", "cuda:1"]
    assert visible_gpus() == 3
    gpus(1)
    assert {worker_device(i) for i in range(4)} == {"cuda:0"}


def test_worker_device_is_cpu_without_gpus(gpus, monkeypatch):
    gpus(0)
    assert [worker_device(i) for i in range(3)] == ["cpu"] * 3
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)   # a count without a usable CUDA is not trusted
    assert worker_device(1) == "cpu" and visible_gpus() == 0


def test_worker_device_over_given_devices(gpus):
    gpus(0)   # given devices are shared out as they are, whatever is visible here
    assert [worker_device(i, [0, 2]) for i in range(4)] == ["cuda:0", "cuda:2", "cuda:0", "cuda:2"]
    assert [worker_device(i, ["cuda:1", "cpu", torch.device("cuda", 3)]) for i in range(3)] == \
        ["cuda:1", "cpu", "cuda:3"]
    for bad_index in (-1, 1.0, True, "0"):
        with pytest.raises(ValueError, match="worker_index"):
            worker_device(bad_index)
    with pytest.raises(ValueError, match="empty"):
        worker_device(0, [])
    with pytest.raises(ValueError, match="not a torch device"):
        worker_device(0, ["gpu7"])


def test_on_device_copies_a_named_reranker(fresh_tiny):
    fitted = HeadRank("qwen3-0.6b", heads=[(1, 2), (3, 0)], device="cpu")
    moved = on_device(fitted, "cuda:1")   # not loaded here: the device is checked where the model loads
    assert (moved.device, fitted.device) == ("cuda:1", "cpu")
    assert moved.heads == fitted.heads and moved is not fitted and moved._loaded is None
    assert on_device(ICR("qwen3-0.6b"), 2).device == "cuda:2"
    with pytest.raises(ValueError, match="loaded Qwen3ForCausalLM"):
        on_device(_tiny("HeadRank", fresh_tiny), "cuda:0")
    with pytest.raises(TypeError, match="build"):
        on_device(pt.Transformer.identity(), "cpu")


def test_device_parallel_plan(gpus):
    gpus(2)
    assert DeviceParallel(HeadRank("qwen3-0.6b")).plan() == ["cuda:0", "cuda:1"]
    assert DeviceParallel(HeadRank("qwen3-0.6b"), 3).plan() == ["cuda:0", "cuda:1", "cuda:0"]
    assert DeviceParallel(HeadRank("qwen3-0.6b"), 4, devices=[1, 3]).plan() == ["cuda:1", "cuda:3"] * 2
    gpus(0)
    assert DeviceParallel(HeadRank("qwen3-0.6b")).plan() == ["cpu"]
    assert DeviceParallel(HeadRank("qwen3-0.6b"), 2).plan() == ["cpu", "cpu"]
    with pytest.raises(ValueError, match="devices"):
        DeviceParallel(HeadRank("qwen3-0.6b"), devices=[0], backend="ray")
    with pytest.raises(ValueError, match="gpus_per_worker"):
        DeviceParallel(HeadRank("qwen3-0.6b"), gpus_per_worker=1)
    with pytest.raises(ValueError, match="backend"):
        DeviceParallel(HeadRank("qwen3-0.6b"), backend="dask")
    with pytest.raises(ValueError, match="n_workers"):
        DeviceParallel(HeadRank("qwen3-0.6b"), 0)


def test_device_parallel_gives_each_joblib_worker_its_device(gpus):
    pytest.importorskip("joblib")
    gpus(2)   # faked in this process only: the workers just receive the device names
    # a stand-in reranker that writes its worker's device into every row; a lambda travels by value to the workers
    build = lambda device: pt.apply.generic(lambda frame: frame.assign(device=device))  # noqa: E731
    out = DeviceParallel(build, backend="joblib")(fit_data.results())
    devices = out.groupby("qid")["device"].unique().map(list).to_dict()
    assert devices == {"q1": ["cuda:0"], "q2": ["cuda:0"], "q3": ["cuda:0"],
                       "q4": ["cuda:1"], "q5": ["cuda:1"], "q6": ["cuda:1"]}
    assert len(out) == len(fit_data.results())


@pytest.fixture(scope="module")
def tiny_folder(tiny_qwen3_folder):
    """The tiny model saved to a folder: a model given by name, which each worker loads from local disk."""
    return tiny_qwen3_folder


def test_device_parallel_on_ray_with_a_shared_score_cache(tiny_folder, ray_cluster, tmp_path):
    """Each Ray worker loads the named model from disk onto its device and writes one sqlite score cache; a later
    sequential run takes every list from that cache."""
    reranker = HeadRank(tiny_folder, **SETTINGS)
    path = tmp_path / "scores.sqlite"
    build = lambda device: HeadRankCache(on_device(reranker, device), path)  # noqa: E731 -- travels by value
    parallel = DeviceParallel(build, 2, backend="ray")
    assert parallel.plan() == ["cpu", "cpu"]          # this cluster has no GPU: the workers are told to use the CPU
    with pytest.raises(ValueError, match="more than the 0 GPUs"):
        DeviceParallel(build, 2, backend="ray", gpus_per_worker=1).plan()
    frame = fit_data.results()
    out = _timed("DeviceParallel(2, backend='ray') with HeadRankCache", parallel, frame)
    _assert_same(out, reranker(frame))
    cached = HeadRankCache(reranker, path)
    assert cached.store.count() == len(fit_data.PASSAGES)
    _assert_same(cached(frame), out)
    assert (cached.hits, cached.misses) == (len(fit_data.PASSAGES), 0)
    assert len(DeviceParallel(reranker, 2, backend="ray")(frame.iloc[:0])) == 0
