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
