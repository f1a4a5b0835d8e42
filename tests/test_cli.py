"""The `headrank` command line: rerank, fit, evaluate, on real DL21 candidates with a tiny random Qwen3 saved to a
folder (passed as --model), in-process through main(argv); plus the installed console script in a subprocess."""
import io
import json
import os
import pathlib
import shutil
import subprocess
import sys
import time

import pandas as pd
import pytest

from pyterrier_headrank import HeadRank
from pyterrier_headrank.integrations.cli import main

from conftest import ROOT, SHARED, need

DL21 = "dl21-passage-bm25top100"
DEPTH = 12  # candidates per query in the small run
CUTOFF = 10  # of which the reranker sees these


@pytest.fixture(scope="module")
def model_dir(tiny_qwen3_folder):
    return tiny_qwen3_folder


@pytest.fixture(scope="module")
def dl21_rows():
    path = need(SHARED / "data" / DL21 / "candidates.jsonl")
    return [json.loads(line) for line in path.open(encoding="utf-8")]


@pytest.fixture(scope="module")
def small(dl21_rows, tmp_path_factory):
    """3 DL21 queries x DEPTH BM25 candidates as a TREC run and as a candidates JSONL."""
    qids = list(dict.fromkeys(r["qid"] for r in dl21_rows))[:3]
    rows = [r for r in dl21_rows if r["qid"] in qids and r["rank"] <= DEPTH]
    folder = tmp_path_factory.mktemp("dl21")
    run = folder / "bm25.txt"
    run.write_text("".join(f"{r['qid']} Q0 {r['docno']} {r['rank']} {r['score']} bm25\n" for r in rows))
    candidates = folder / "candidates.jsonl"
    candidates.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {"run": str(run), "candidates": str(candidates), "rows": rows, "qids": qids, "folder": folder}


def _run_lines(path):
    return [line.split() for line in pathlib.Path(path).read_text().splitlines()]


def _expected_top(model_dir, rows, qid, heads=None):
    """HeadRank's own order (Python API) of a query's first CUTOFF candidates."""
    frame = pd.DataFrame([r for r in rows if r["qid"] == qid and r["rank"] <= CUTOFF])
    frame["rank"] -= 1
    out = HeadRank(model_dir, heads)(frame[["qid", "query", "docno", "score", "rank", "text"]])
    return list(out.sort_values("rank")["docno"])


# ---- rerank -----------------------------------------------------------------------------------------------------
def test_rerank_run_against_a_collection(model_dir, small, tmp_path, capsys):
    out = tmp_path / "headrank.txt"
    code = main(["rerank", "--model", model_dir, "--collection", DL21, "--run", small["run"], "--cutoff",
                 str(CUTOFF), "--batch-size", "2", "--device", "cpu", "--tag", "hr", "-o", str(out)])
    assert code == 0
    assert "reranked 3 queries" in capsys.readouterr().err
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask, "the run file honours the umask, as open() would"
    lines = _run_lines(out)
    assert len(lines) == 3 * DEPTH and all(len(line) == 6 and line[1] == "Q0" and line[5] == "hr" for line in lines)
    for qid in small["qids"]:
        mine = [line for line in lines if line[0] == qid]
        assert [int(line[3]) for line in mine] == list(range(1, DEPTH + 1))
        scores = [float(line[4]) for line in mine]
        assert all(a > b for a, b in zip(scores, scores[1:])), "scores strictly decrease with rank"
        first_stage = [r["docno"] for r in small["rows"] if r["qid"] == qid]  # rows are in BM25 rank order
        docnos = [line[2] for line in mine]
        assert sorted(docnos) == sorted(first_stage)
        assert docnos[CUTOFF:] == first_stage[CUTOFF:], "below the cutoff: first-stage order"
        assert docnos[:CUTOFF] == _expected_top(model_dir, small["rows"], qid)


def test_rerank_candidates_jsonl_to_stdout_with_heads(model_dir, small, capsys):
    code = main(["rerank", "--model", model_dir, "--candidates", small["candidates"], "--queries", "1",
                 "--cutoff", str(CUTOFF), "--heads", "1:0,2:3:0.5", "--quiet", "-o", "-"])
    assert code == 0
    lines = [line.split() for line in capsys.readouterr().out.splitlines()]
    qid = sorted(small["qids"])[0]
    assert {line[0] for line in lines} == {qid} and len(lines) == DEPTH
    expected = _expected_top(model_dir, small["rows"], qid, heads=[(1, 0, 1.0), (2, 3, 0.5)])
    assert [line[2] for line in lines[:CUTOFF]] == expected


def test_rerank_reads_heads_from_a_json_file(model_dir, small, tmp_path, capsys):
    heads = tmp_path / "heads.json"
    heads.write_text(json.dumps({"name": "two", "heads": [[1, 0], [2, 3]], "weights": [1.0, 0.5]}))
    code = main(["rerank", "--model", model_dir, "--candidates", small["candidates"], "--queries", "1", "-q",
                 "--cutoff", str(CUTOFF), "--heads", str(heads), "-o", "-"])
    assert code == 0
    lines = [line.split() for line in capsys.readouterr().out.splitlines()]
    qid = sorted(small["qids"])[0]
    assert [line[2] for line in lines[:CUTOFF]] == _expected_top(model_dir, small["rows"], qid,
                                                                 heads=[(1, 0, 1.0), (2, 3, 0.5)])


# ---- evaluate ---------------------------------------------------------------------------------------------------
def test_evaluate_reproduces_the_published_bm25_number(dl21_rows, tmp_path, capsys):
    run = tmp_path / "bm25-full.txt"
    run.write_text("".join(f"{r['qid']} Q0 {r['docno']} {r['rank']} {r['score']} bm25\n" for r in dl21_rows))
    assert main(["evaluate", "--collection", DL21, str(run), "--format", "json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["run"] == "bm25-full.txt" and row["queries"] == 53
    assert row["nDCG@10"] == pytest.approx(0.4458, abs=5e-5)  # Pyserini's published BM25 on DL21
    qrels = need(SHARED / "data" / DL21 / "qrels.tsv")
    assert main(["evaluate", "--qrels", str(qrels), str(run), "--measures", "nDCG@10", "P@5"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["run", "queries", "nDCG@10", "P@5"]
    assert table[1].split()[:3] == ["bm25-full.txt", "53", "0.4458"]


def test_evaluate_several_runs_and_trec_qrels(small, tmp_path, capsys):
    qrels = tmp_path / "qrels.txt"  # TREC format: qid 0 docno label; the first candidate relevant
    first = {}
    for r in small["rows"]:
        first.setdefault(r["qid"], r["docno"])
    qrels.write_text("".join(f"{q} 0 {d} 1\n" for q, d in first.items()))
    reversed_run = tmp_path / "reversed.txt"
    reversed_run.write_text("".join(f"{r['qid']} Q0 {r['docno']} {r['rank']} {r['rank']} rev\n"
                                    for r in small["rows"]))
    assert main(["evaluate", "--qrels", str(qrels), small["run"], str(reversed_run), "--measures", "RR@100",
                 "--format", "csv"]) == 0
    table = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert list(table["run"]) == ["bm25.txt", "reversed.txt"]
    # BM25's first candidate is first in bm25.txt (RR 1) and last (rank DEPTH) in the reversed run
    assert list(table["RR@100"]) == pytest.approx([1.0, 1.0 / DEPTH])


def test_evaluate_averages_over_the_queries_the_run_answers(dl21_rows, tmp_path, capsys):
    """A run of 3 perfect queries scores 1.0, as trec_eval says; not 3/53 (a mean over every judged query)."""
    qrels = pd.read_csv(need(SHARED / "data" / DL21 / "qrels.tsv"), sep="\t", dtype=str)
    qids = list(dict.fromkeys(r["qid"] for r in dl21_rows))[:3]
    best = qrels[qrels["query-id"].isin(qids)].assign(grade=lambda f: f["score"].astype(int))
    best = best.sort_values(["query-id", "grade"], ascending=[True, False])
    run = tmp_path / "perfect.txt"
    run.write_text("".join(f"{q} Q0 {d} {i + 1} {100 - i} ideal\n" for q, group in best.groupby("query-id")
                           for i, d in enumerate(group["corpus-id"])))
    assert main(["evaluate", "--collection", DL21, str(run), "--format", "json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["queries"] == 3 and row["nDCG@10"] == pytest.approx(1.0) and row["RR@10"] == pytest.approx(1.0)


# ---- fit --------------------------------------------------------------------------------------------------------
def test_fit_then_rerank_with_the_fitted_folder(model_dir, small, tmp_path, capsys):
    fitted = tmp_path / "fitted"
    code = main(["fit", "--model", model_dir, "--collection", DL21, "--run", small["run"], "--cutoff", str(CUTOFF),
                 "--num-heads", "4", "--epochs", "1", "--seed", "3", "-q", "-o", str(fitted)])
    assert code == 0, capsys.readouterr().err
    assert fitted.is_dir() and any(fitted.iterdir())
    out = tmp_path / "fitted.txt"
    assert main(["rerank", "--fitted", str(fitted), "--collection", DL21, "--run", small["run"], "-q",
                 "--cutoff", str(CUTOFF), "-o", str(out)]) == 0
    reranker = HeadRank.from_pretrained(str(fitted))
    assert len(reranker.head_set) == 4
    qid = sorted(small["qids"])[0]
    mine = [line[2] for line in _run_lines(out) if line[0] == qid][:CUTOFF]
    frame = pd.DataFrame([r for r in small["rows"] if r["qid"] == qid and r["rank"] <= CUTOFF])
    frame["rank"] -= 1
    assert mine == list(reranker(frame).sort_values("rank")["docno"])


# ---- bad input --------------------------------------------------------------------------------------------------
def _fails(argv, capsys, match, code=1):
    assert main(argv) == code
    err = capsys.readouterr().err.strip()
    assert match in err, err
    if code == 1:
        assert len(err.splitlines()) == 1 and err.startswith("headrank "), err
    return err


def test_bad_input_is_one_line_and_nonzero(model_dir, small, tmp_path, capsys):
    out = str(tmp_path / "o.txt")
    base = ["rerank", "--model", model_dir, "-q", "-o", out]
    _fails(base + ["--run", str(tmp_path / "nope.txt"), "-c", DL21], capsys, "does not exist")
    bad = tmp_path / "bad.txt"
    bad.write_text("q1 Q0 d1 1 2.0 tag\nq1 Q0 d2 oops\n")
    _fails(base + ["--run", str(bad), "-c", DL21], capsys, "bad.txt:2: a TREC run line has 6 fields")
    bad.write_text("q1 Q0 d1 1 high tag\n")
    _fails(base + ["--run", str(bad), "-c", DL21], capsys, "score 'high' is not a number")
    _fails(base + ["--run", small["run"], "-c", "no-such-collection-xyz"], capsys, "no-such-collection-xyz")
    _fails(base + ["--run", small["run"]], capsys, "pass --collection")
    _fails(base + ["--run", small["run"], "-c", "vaswani"], capsys, "not topics of 'vaswani'")
    _fails(base + ["--candidates", small["candidates"], "--cutoff", "0"], capsys, "--cutoff must be >= 1")
    _fails(base + ["--candidates", small["candidates"], "--heads", "1-0"], capsys, "not LAYER:HEAD")
    _fails(base + ["--candidates", small["candidates"], "--heads", "99:0"], capsys, "does not exist in a model")
    _fails(base + ["--candidates", small["candidates"], "--model", "not-a-model"], capsys, "unknown model")
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"qid": "1", "docno": "a", "query": "q", "text": "t"}\n{not json\n')
    _fails(base + ["--candidates", str(broken)], capsys, "broken.jsonl:2: not a JSON object")
    assert not os.path.exists(out), "nothing written on error"
    _fails(["evaluate", "-c", DL21, small["run"], "--measures", "nDCG@ten"], capsys, "unknown measure")
    _fails(["evaluate", small["run"]], capsys, "give --qrels or --collection")
    _fails(["evaluate", "-c", "vaswani", small["run"]], capsys, "answers none of the judged queries")
    _fails(["rerank", "--candidates", small["candidates"]], capsys, "required: --output/-o", code=2)
    _fails(["rerank", "--run", "a", "--candidates", "b", "-o", out], capsys, "not allowed with", code=2)
    _fails(["frobnicate"], capsys, "invalid choice", code=2)


def test_help_for_every_command(capsys):
    for command in ([], ["rerank"], ["fit"], ["evaluate"]):
        assert main(command + ["--help"]) == 0
        text = capsys.readouterr().out
        assert text.startswith("usage: headrank")
    assert main(["rerank", "--help"]) == 0
    text = capsys.readouterr().out
    for option in ("--model", "--heads", "--fitted", "--cutoff", "--batch-size", "--device", "--output", "--run",
                   "--candidates", "--collection"):
        assert option in text
    from pyterrier_headrank.integrations.cli import build_parser

    args = build_parser().parse_args(["rerank", "--candidates", "c.jsonl", "-o", "x"])
    assert args.batch_size is None  # HeadRank's own default (1 on CPU), the same as the demo's


def test_output_and_device_are_checked_before_any_work(small, tmp_path, capsys):
    missing_run = str(tmp_path / "nope.txt")  # would fail too, but only after the output is checked
    _fails(["rerank", "--run", missing_run, "-c", DL21, "-o", str(tmp_path / "no" / "such" / "run.txt")], capsys,
           "output folder")
    _fails(["rerank", "--run", missing_run, "-c", DL21, "-o", str(tmp_path)], capsys, "is a folder")
    _fails(["rerank", "--run", missing_run, "-c", DL21, "-o", str(tmp_path / "r.txt")], capsys, "does not exist")
    run = small["run"]  # the device is checked before the collection and the run are read, and before a model loads
    if not torch_has_cuda():
        _fails(["rerank", "--run", run, "-c", DL21, "--device", "cuda", "-o", str(tmp_path / "r.txt")],
               capsys, "HeadRank: device 'cuda' is not available")
    _fails(["rerank", "--run", run, "-c", DL21, "--device", "tpu9", "-o", str(tmp_path / "r.txt")],
           capsys, "is not a torch device")
    assert not list(tmp_path.glob(".r.txt.*")) and not (tmp_path / "r.txt").exists()  # no temporary file left
    (tmp_path / "file").write_text("")
    _fails(["fit", "-c", DL21, "-o", str(tmp_path / "file")], capsys, "not a folder")


def torch_has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def test_rerank_with_a_shipped_fit_by_name(smollm2, small, tmp_path, capsys):
    """--fitted takes what HeadRank.from_pretrained takes: a shipped fit's name, not only a folder."""
    out = tmp_path / "shipped.txt"
    qid = sorted(small["qids"])[0]
    one = tmp_path / "one.txt"
    one.write_text("".join(f"{r['qid']} Q0 {r['docno']} {r['rank']} {r['score']} bm25\n" for r in small["rows"]
                           if r["qid"] == qid))
    assert main(["rerank", "--fitted", "smollm2-135m-scifact", "-c", DL21, "--run", str(one), "--cutoff", "5",
                 "-q", "-o", str(out)]) == 0, capsys.readouterr().err
    frame = pd.DataFrame([r for r in small["rows"] if r["qid"] == qid and r["rank"] <= 5])
    frame["rank"] -= 1
    expected = HeadRank.from_pretrained("smollm2-135m-scifact")(frame).sort_values("rank")["docno"]
    assert [line[2] for line in _run_lines(out)][:5] == list(expected)


# ---- the console script -----------------------------------------------------------------------------------------
def test_console_script_help_and_bad_input_exit_code(tmp_path):
    script = shutil.which("headrank", path=os.path.dirname(sys.executable))
    if script is None:
        pytest.skip("the `headrank` console script is not installed here (pip install -e . installs it)")
    done = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0 and "rerank" in done.stdout and "evaluate" in done.stdout
    done = subprocess.run([script, "evaluate", "--qrels", str(tmp_path / "missing.tsv"), str(tmp_path / "r.txt")],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [f"headrank evaluate: error: qrels file {tmp_path / 'missing.tsv'} "
                                                f"does not exist"]


def test_help_and_usage_errors_answer_fast_without_torch(tmp_path):
    script = shutil.which("headrank", path=os.path.dirname(sys.executable))
    if script is None:
        pytest.skip("the `headrank` console script is not installed here (pip install -e . installs it)")
    for argv in ([script, "--help"], [script, "rerank", "--help"], [script, "rerank"]):
        started = time.perf_counter()
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=tmp_path)
        assert time.perf_counter() - started < 2.0, (argv, done.stderr)
        assert done.returncode in (0, 2)
    probe = "import sys, pyterrier_headrank, pyterrier_headrank.integrations.cli; " \
            "print(sorted({'torch', 'pandas', 'transformers', 'pyterrier'} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.stdout.strip() == "[]", done.stderr


def test_module_entry_point_runs(tmp_path):
    """``python -m pyterrier_headrank.integrations.cli`` runs the command (the console script's module)."""
    done = subprocess.run([sys.executable, "-m", "pyterrier_headrank.integrations.cli", "rerank", "-o", "x"],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 1 and "give --run or --candidates" in done.stderr


# ---- presets ----------------------------------------------------------------------------------------------------
def test_the_paper_preset_names_dl_2021_to_2023_and_the_offline_one_dl21():
    from pyterrier_headrank.integrations.cli import PRESET_NAMES
    from pyterrier_headrank.integrations.presets import PRESETS

    assert PRESETS["paper"].collections == tuple(f"irds:msmarco-passage-v2/trec-dl-{y}/judged"
                                                 for y in (2021, 2022, 2023))
    assert PRESETS["paper-offline"].collections == (DL21,)
    assert sorted(PRESET_NAMES) == sorted(PRESETS)


def test_fit_with_the_offline_paper_preset_trains_on_the_shared_dl21(model_dir, tmp_path, capsys):
    fitted = tmp_path / "paper"
    code = main(["fit", "--preset", "paper-offline", "--model", model_dir, "--queries", "3", "--cutoff", "5",
                 "--num-heads", "2", "--max-layer", "1", "--no-align", "-q", "-o", str(fitted)])
    assert code == 0, capsys.readouterr().err
    summary = HeadRank.from_pretrained(str(fitted)).fit_summary_
    assert summary["train"]["queries"] == 3
    assert main(["fit", "--preset", "paper-offline", "--collection", DL21, "--model", model_dir, "-q",
                 "-o", str(tmp_path / "x")]) == 1
    assert "--preset names its own collections" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["rerank", "--candidates", "c.jsonl", "-o", "x", "--queries", "0"],
                                  ["rerank", "--candidates", "c.jsonl", "-o", "x", "--queries", "-1"],
                                  ["fit", "--preset", "paper-offline", "-o", "x", "--queries", "two"]])
def test_counts_below_one_are_usage_errors_not_silent_cuts(argv, capsys):
    """--queries 0 used to mean "all" and -1 "all but the last"; it must be a whole number >= 1 (--cutoff is checked
    the same way after parsing, see test_bad_input_is_one_line_and_nonzero)."""
    from pyterrier_headrank.integrations.cli import build_parser

    with pytest.raises(SystemExit) as stop:
        build_parser().parse_args(argv)
    assert stop.value.code == 2 and "is not a whole number >= 1" in capsys.readouterr().err
