"""The main job, examples/rerank_scifact.py: query sampling, first stages, and an end-to-end run with SmolLM2."""
import importlib.util
import math

import pytest

from conftest import ROOT, SHARED, need

SCRIPT = ROOT / "examples" / "rerank_scifact.py"


@pytest.fixture(scope="module")
def job():
    spec = importlib.util.spec_from_file_location("rerank_scifact", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HEADRANK_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_arguments_and_defaults(job):
    args = job.build_parser().parse_args([])
    assert (args.model, args.dataset, args.cutoff, args.seed) == ("smollm2-135m", "beir/scifact/test", 20, 0)
    assert args.queries == job.DEFAULT_QUERIES > 0
    assert args.batch_size is None  # HeadRank's own default (1 on CPU), as the README and the CLI say
    args = job.build_parser().parse_args(["--queries", "3", "--cutoff", "5", "--batch-size", "2", "--seed", "7"])
    assert (args.queries, args.cutoff, args.batch_size, args.seed) == (3, 5, 2, 7)


def test_sample_topics_is_seeded_and_judged_only(job):
    from pyterrier_headrank.data import get_collection

    need(SHARED / "data" / "cacm")
    collection = get_collection("cacm")  # 64 topics, 52 with a relevant document
    topics, qrels = collection.get_topics(), collection.get_qrels()
    judged = set(qrels.loc[qrels["label"] > 0, "qid"])
    one, same = job.sample_topics(topics, qrels, 10, 3), job.sample_topics(topics, qrels, 10, 3)
    other = job.sample_topics(topics, qrels, 10, 4)
    assert len(one) == 10 and one["qid"].is_unique and set(one["qid"]) <= judged
    assert one.equals(same) and not one["qid"].equals(other["qid"])
    assert set(job.sample_topics(topics, qrels, 0, 0)["qid"]) == judged
    assert len(job.sample_topics(topics, qrels, 500, 0)) == len(judged)


def test_candidate_sets_use_their_shipped_bm25(job):
    """DL21's corpus is only its candidates: BM25 over it would be meaningless, so the shipped top-100 is used."""
    from pyterrier_headrank.data import get_collection

    need(SHARED / "data" / "dl21-passage-bm25top100")
    collection = get_collection("dl21-passage-bm25top100")
    topics = collection.get_topics().head(2)
    run = job.first_stage(collection, "auto", 20, verbose=False)(topics)
    expected = collection.get_candidates()
    expected = expected[expected["qid"].isin(topics["qid"])]
    assert sorted(zip(run["qid"], run["docno"])) == sorted(zip(expected["qid"], expected["docno"]))


def test_main_job_end_to_end_with_smollm2(job, smollm2, tmp_cache, capsys):
    """Two SciFact queries through PISA BM25 and HeadRank(SmolLM2); the printed table compares both systems."""
    pytest.importorskip("pyterrier_pisa")
    need(SHARED / "data" / "beir-scifact")
    table = job.main(["--queries", "2", "--cutoff", "8", "--quiet"])
    names = list(table["name"])
    assert names == ["BM25", "BM25 % 8 >> HeadRank(smollm2-135m)",
                     "BM25 % 8 >> HeadRank(smollm2-135m, heads='zero-shot')"]
    for measure in ("nDCG@10", "RR@10"):
        assert all(0.0 <= v <= 1.0 and math.isfinite(v) for v in table[measure]), table
    mrt = table.set_index("name")["mrt"]
    assert mrt.gt(0).all() and mrt[names[1]] > mrt[names[0]]  # an LLM pass per query costs more than BM25
    printed = capsys.readouterr().out
    assert names[1] in printed and names[2] in printed and "nDCG@10" in printed and "mrt" in printed
    assert (tmp_cache / "pisa").is_dir()  # the BM25 index went to the cache folder, not the project


def test_without_the_shared_folder_the_job_says_so_in_one_line(job, monkeypatch, tmp_path, capsys):
    """No shared copy and no network: one line naming the missing folder and HEADRANK_SHARED, not a traceback."""
    monkeypatch.setenv("HEADRANK_SHARED", str(tmp_path / "nowhere"))
    with pytest.raises(SystemExit) as stop:
        job.open_collection("vaswani", "auto")  # (SciFact may already sit in ir_datasets' folder: other tests)
    message = str(stop.value.code)
    assert len(message.splitlines()) == 1, message
    assert str(tmp_path / "nowhere" / "data" / "vaswani") in message and "HEADRANK_SHARED" in message
    assert capsys.readouterr().err == ""  # ir_datasets' retry log is held back
