#!/usr/bin/env python
"""Execute the example notebooks in place, so that they are committed with their outputs.

Each notebook runs with nbclient in a kernel that runs *this* interpreter (a kernel spec written to a temporary
folder and put first on ``JUPYTER_PATH``, so that a ``python3`` kernel installed elsewhere cannot hijack the run),
with ``HEADRANK_SHARED`` pointing at the shared data folder (default: the folder ``shared`` beside the project).
The outputs are then cleaned of anything machine-specific (absolute paths, run timestamps, the temporary kernel's
name) and checked: every code cell executed, no error, no absolute path, no progress bar, no Python warning.
A notebook whose run fails is left unchanged (the partial run is saved to a temporary folder); one that runs but
fails a check is written (to look at); either way the script exits with status 1.

    .venv/bin/python examples/execute_notebooks.py                       # all three
    .venv/bin/python examples/execute_notebooks.py 01_quickstart.ipynb   # one

``tests/test_notebooks.py`` imports the kernel spec, the runner and the checks from here.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import pathlib
import re
import sys
import tempfile
import time
from typing import Dict, Iterator, List, Optional

EXAMPLES = pathlib.Path(__file__).resolve().parent
os.environ.setdefault("HEADRANK_SHARED", str(EXAMPLES.parents[1] / "shared"))  # the kernels inherit it
ROOT = EXAMPLES.parent
NOTEBOOKS = ["01_quickstart.ipynb", "02_fitting.ipynb", "03_baselines.ipynb"]
KERNEL = "headrank-python"
CELL_TIMEOUT = 900  # seconds per cell: the machines are shared

# what must not be committed
ABSOLUTE_PATHS = ("/work/", "/home/", "/root/", "/tmp/")
PROGRESS = re.compile(r"\d\s*(?:[A-Za-z]+/s|s/it)\b|\d+%\|[^|\n]*\||\r(?!\n)")  # tqdm: 3.2it/s, 1.5s/it, 40%|##|
WARNING = re.compile(r"\b[A-Za-z]*warning\b:|\bwarnings\.warn\(", re.IGNORECASE)
WIDGET = "application/vnd.jupyter.widget-view+json"  # a tqdm.notebook bar, among others


def default_shared() -> pathlib.Path:
    """``$HEADRANK_SHARED``, else the folder ``shared`` beside the project root."""
    return pathlib.Path(os.environ.get("HEADRANK_SHARED") or ROOT.parent / "shared")


@contextlib.contextmanager
def kernel_spec(folder: Optional[os.PathLike] = None, name: str = KERNEL) -> Iterator[str]:
    """A kernel spec ``name`` for this interpreter, first on ``JUPYTER_PATH`` while the block runs; yields its name.

    Written under ``folder`` (default: a temporary folder, removed afterwards)."""
    with contextlib.ExitStack() as stack:
        if folder is None:
            folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="headrank-jupyter-"))
        spec = pathlib.Path(folder) / "kernels" / name
        spec.mkdir(parents=True, exist_ok=True)
        (spec / "kernel.json").write_text(json.dumps({
            "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "pyterrier-headrank (this interpreter)", "language": "python"}))
        previous = os.environ.get("JUPYTER_PATH")
        os.environ["JUPYTER_PATH"] = os.pathsep.join([str(folder)] + ([previous] if previous else []))
        try:
            yield name
        finally:
            if previous is None:
                os.environ.pop("JUPYTER_PATH", None)
            else:
                os.environ["JUPYTER_PATH"] = previous


@contextlib.contextmanager
def _environ(**values: str) -> Iterator[None]:
    previous = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def execute(nb, kernel_name: str, shared: Optional[os.PathLike] = None, timeout: int = CELL_TIMEOUT,
            cwd: os.PathLike = EXAMPLES, record_timing: bool = True):
    """Run every cell of ``nb`` in place, in the folder ``cwd``; raises nbclient's CellExecutionError on the first
    cell that fails (the outputs up to there stay in ``nb``). The kernel inherits ``HEADRANK_SHARED=shared``."""
    from nbclient import NotebookClient

    shared = default_shared() if shared is None else shared
    client = NotebookClient(nb, timeout=timeout, kernel_name=kernel_name, allow_errors=False,
                            record_timing=record_timing, resources={"metadata": {"path": str(cwd)}})
    with _environ(HEADRANK_SHARED=str(pathlib.Path(shared).resolve())):
        client.execute()
    return nb


def _text_outputs(cell) -> Iterator[str]:
    """The text of a cell's outputs (streams, text/* and JSON data, tracebacks); images are left out."""
    for out in cell.get("outputs", []):
        if out.output_type == "stream":
            yield out.get("text", "")
        elif out.output_type == "error":
            yield "\n".join([out.get("ename", ""), out.get("evalue", "")] + list(out.get("traceback", [])))
        else:
            for mime, value in out.get("data", {}).items():
                if mime.startswith("image/") and mime != "image/svg+xml":
                    continue
                yield value if isinstance(value, str) else json.dumps(value)


def _replacements(shared: Optional[os.PathLike] = None) -> Dict[str, str]:
    """Machine-specific prefixes -> what a reader should see, longest first (so nested folders go first)."""
    table = {}
    for path, label in [(EXAMPLES, "."), (ROOT, ".."), (default_shared() if shared is None else shared, "../shared"),
                        (pathlib.Path(sys.prefix), "<venv>"), (pathlib.Path.home(), "~"),
                        (pathlib.Path(tempfile.gettempdir()), "<tmp>")]:
        for variant in {str(path), str(pathlib.Path(path).resolve())}:
            if len(variant) > 1:
                table.setdefault(variant, label)
    return dict(sorted(table.items(), key=lambda item: -len(item[0])))


def _scrub_text(text: str, table: Dict[str, str]) -> str:
    for prefix, label in table.items():  # a whole path component only: /work/main, not /work/main2
        text = re.sub(re.escape(prefix) + r"(?![\w.-])", lambda _, label=label: label, text)
    return text


def scrub(nb, kernelspec: Optional[dict] = None, shared: Optional[os.PathLike] = None):
    """Remove what is machine-specific from ``nb``'s outputs, in place: absolute paths (the project, the shared
    folder, the interpreter, the home and temporary folders) and run timestamps; restore ``kernelspec`` (the
    notebook's own, rather than the temporary kernel's) when given."""
    table = _replacements(shared)
    for cell in nb.cells:
        cell.metadata.pop("execution", None)  # nbclient's timestamps
        for out in cell.get("outputs", []):
            if out.output_type == "stream":
                out["text"] = _scrub_text(out.get("text", ""), table)
            elif out.output_type == "error":
                out["evalue"] = _scrub_text(out.get("evalue", ""), table)
                out["traceback"] = [_scrub_text(line, table) for line in out.get("traceback", [])]
            else:
                for mime, value in list(out.get("data", {}).items()):
                    if isinstance(value, str) and not (mime.startswith("image/") and mime != "image/svg+xml"):
                        out["data"][mime] = _scrub_text(value, table)
    if kernelspec is not None:
        nb.metadata["kernelspec"] = copy.deepcopy(kernelspec)
    return nb


def problems(nb, executed: bool = True, paths: bool = True) -> List[str]:
    """What is wrong with ``nb`` as a committed notebook: code cells not executed (when ``executed``), error
    outputs, absolute paths in sources or outputs (when ``paths``), progress bars and Python warnings in the
    outputs. An empty list when there is nothing to fix."""
    found = []
    code = [(i, cell) for i, cell in enumerate(nb.cells) if cell.cell_type == "code"]
    if not code:
        found.append("no code cell")
    for i, cell in enumerate(nb.cells):
        where = f"cell {i}"
        for path in ABSOLUTE_PATHS if paths else ():
            if path in cell.source:
                found.append(f"{where}: absolute path {path!r} in the source")
    for i, cell in code:
        where = f"cell {i}"
        if executed and cell.get("execution_count") is None:
            found.append(f"{where}: not executed")
        for out in cell.get("outputs", []):
            if out.output_type == "error":
                found.append(f"{where}: error output {out.get('ename')}: {out.get('evalue')}")
            if WIDGET in out.get("data", {}):
                found.append(f"{where}: a widget output (progress bar?)")
        for text in _text_outputs(cell):
            for path in ABSOLUTE_PATHS if paths else ():
                if path in text:
                    found.append(f"{where}: absolute path {path!r} in the outputs")
            for pattern, what in [(PROGRESS, "progress bar"), (WARNING, "warning")]:
                match = pattern.search(text)
                if match:
                    line = text[max(0, text.rfind("\n", 0, match.start()) + 1):][:160].strip()
                    found.append(f"{where}: {what} in the outputs: {line!r}")
    return found


def run(names: List[str], shared: Optional[os.PathLike] = None, timeout: int = CELL_TIMEOUT) -> int:
    """Execute, scrub, check and write back each notebook; 0 if all are clean, else 1."""
    import nbformat

    status = 0
    with kernel_spec() as kernel:
        for name in names:
            path = EXAMPLES / name
            nb = nbformat.read(str(path), as_version=4)
            kernelspec = copy.deepcopy(nb.metadata.get("kernelspec"))
            for cell in nb.cells:  # start from a clean notebook
                if cell.cell_type == "code":
                    cell.outputs, cell.execution_count = [], None
            started = time.perf_counter()
            print(f"{name}: running...", flush=True)
            try:
                execute(nb, kernel, shared=shared, timeout=timeout, record_timing=False)
            except Exception as err:  # keep the committed notebook; save the partial run aside
                aside = pathlib.Path(tempfile.mkdtemp(prefix="headrank-notebook-")) / name
                nbformat.write(nb, str(aside))
                print(f"{name}: FAILED, left unchanged ({time.perf_counter() - started:.0f} s; the partial run is in "
                      f"{aside}): {type(err).__name__}: {str(err)[-2000:]}", file=sys.stderr)
                status = 1
                continue
            scrub(nb, kernelspec, shared)
            nbformat.write(nb, str(path))
            issues = problems(nb)
            for issue in issues:
                print(f"{name}: {issue}", file=sys.stderr)
            status = status or int(bool(issues))
            print(f"{name}: {'written' if not issues else 'written, with problems'} "
                  f"({time.perf_counter() - started:.0f} s)", flush=True)
    return status


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", default=NOTEBOOKS, help=f"names in examples/ (default: {NOTEBOOKS})")
    parser.add_argument("--shared", default=None, help="the shared data folder (default: $HEADRANK_SHARED, "
                                                       "else ../shared beside the project)")
    parser.add_argument("--timeout", type=int, default=CELL_TIMEOUT, help="time limit per cell, seconds")
    args = parser.parse_args(argv)
    names = [pathlib.Path(name).name for name in args.notebooks]
    unknown = [name for name in names if not (EXAMPLES / name).is_file()]
    if unknown:
        parser.error(f"no such notebook in examples/: {unknown}")
    return run(names, shared=args.shared, timeout=args.timeout)


if __name__ == "__main__":
    sys.exit(main())
