"""TREC run and qrels files for the ``headrank`` command, through :mod:`pyterrier.io`.

pyterrier.io reads and writes the files; these functions add the checks and the one-line errors (:class:`CliError`)
of the command line, and give the frames the columns and dtypes the commands use. pandas and PyTerrier are imported
inside the functions, so that ``headrank --help`` answers at once.
"""
from __future__ import annotations

import contextlib
import json
import os
import pathlib
import sys
import tempfile
from typing import TYPE_CHECKING, Optional, Sequence

if TYPE_CHECKING:  # for annotations only
    import pandas as pd


class CliError(Exception):
    """Bad input: reported as one line, exit status 1."""


# TREC runs and qrels are read and written by pyterrier.io; these functions add the checks and the one-line errors of
# the command line, and give the frames the columns and dtypes the commands use.
RUN_COLUMNS = ("qid", "docno", "score")
QRELS_COLUMNS = ("qid", "docno", "label")


def require_file(path, what: str) -> pathlib.Path:
    """``path`` as a Path, refused (``CliError``, "<what> file ... does not exist") when it is not a file."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise CliError(f"{what} file {path} does not exist")
    return path


def read_trec_run(path) -> pd.DataFrame:
    """A TREC run file as a result frame ``qid, docno, score, rank`` (rank from 0, in the file's order per query).

    Lines are ``qid Q0 docno rank score [tag]``, read by ``pt.io.read_results``; ranks are re-derived from the scores
    (ties keep the file's order), as trec_eval does.
    """
    import pyterrier as pt

    path = require_file(path, "run")
    try:
        run = pt.io.read_results(str(path), format="trec")
    except ValueError as err:  # pandas' ParserError is a ValueError
        raise _unreadable(path, _run_line_problem, "a TREC run", err) from None
    if not _plain_rows(run) or run["score"].isna().any():  # too few or too many fields on some line
        _check_lines(path, _run_line_problem)
    _check_columns(run, RUN_COLUMNS, path, "a TREC run")
    if run.empty:
        raise CliError(f"run file {path} is empty")
    if run[["qid", "docno"]].isna().any().any():
        raise CliError(f"{path}: a qid or docno reads as missing (empty, NA, null, nan...)")
    run = run[list(RUN_COLUMNS)]
    _check_unique(run, path)
    return rank_by_score(run)


def _run_line_problem(parts: Sequence[str]) -> Optional[str]:
    """What is wrong with the fields of one TREC run line (None: nothing), as ``pt.io.read_results`` reads it."""
    if len(parts) not in (5, 6):
        return f"a TREC run line has 6 fields (qid Q0 docno rank score tag), found {len(parts)}"
    try:
        float(parts[4])
    except ValueError:
        return f"score {parts[4]!r} is not a number"
    try:
        int(parts[3])
    except ValueError:
        return f"rank {parts[3]!r} is not an integer"
    return None


def _qrels_line_problem(parts: Sequence[str]) -> Optional[str]:
    """What is wrong with the fields of one TREC qrels line (None: nothing), as ``pt.io.read_qrels`` reads it."""
    if len(parts) != 4:
        return f"a TREC qrels line has 4 fields (qid iteration docno label), found {len(parts)}"
    return None


def _check_lines(path: pathlib.Path, problem) -> None:
    """Raise a CliError naming the first line of ``path`` that ``problem`` finds wrong, if any.

    pyterrier.io reads a whole file with pandas, whose errors name no line (or none at all: a line with too few fields
    reads as missing values); this finds the line to report, and runs only once a file is known to be bad.
    """
    import pyterrier as pt

    with pt.io.autoopen(str(path), "rt", encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, start=1):
            parts = line.split()
            wrong = problem(parts) if parts else None
            if wrong:
                raise CliError(f"{path}:{number}: {wrong}")


def _unreadable(path: pathlib.Path, problem, what: str, err: BaseException) -> CliError:
    """The CliError for a file that pyterrier.io could not read: its first bad line where one is found, else the
    reader's own message."""
    _check_lines(path, problem)
    return CliError(f"{path}: not {what} file ({first_line(err)})")


def _plain_rows(frame) -> bool:
    """Whether ``frame`` has one row per line, numbered from 0: pandas turns the first fields into the index instead
    where lines have more fields than the format's columns."""
    import pandas as pd

    return isinstance(frame.index, pd.RangeIndex) and frame.index.start == 0 and frame.index.step == 1


def _check_columns(frame, columns: Sequence[str], path: pathlib.Path, what: str) -> None:
    """Fail clearly if the reader did not return the ``columns`` the commands use (another pyterrier.io release)."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise CliError(f"{path}: reading {what} file gave no {', '.join(missing)} column (columns: "
                       f"{list(frame.columns)})")


def _check_unique(frame, path: pathlib.Path) -> None:
    """Fail on a document listed twice for one query: a ranking holds each candidate once."""
    duplicated = frame.duplicated(["qid", "docno"])
    if duplicated.any():
        qid, docno = frame.loc[duplicated, ["qid", "docno"]].iloc[0]
        raise CliError(f"{path}: document {docno!r} appears twice for query {qid!r}")


def rank_by_score(frame):
    """Sort by qid then descending score (stable) and number the rank from 0 within each qid."""
    frame = frame.sort_values(["qid", "score"], ascending=[True, False], kind="stable").reset_index(drop=True)
    frame["rank"] = frame.groupby("qid", sort=False).cumcount().astype("int64")
    return frame


def read_candidates(path) -> pd.DataFrame:
    """A JSONL of candidates: one object per line with ``qid, docno`` and usually ``query, text`` (``score`` or
    ``rank`` give the first-stage order; without either, the file's order)."""
    import pandas as pd

    path = require_file(path, "candidates")
    rows = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as err:
                raise CliError(f"{path}:{number}: not a JSON object ({err})") from None
            if not isinstance(row, dict) or "qid" not in row or "docno" not in row:
                raise CliError(f"{path}:{number}: each line needs at least 'qid' and 'docno'")
            rows.append(row)
    if not rows:
        raise CliError(f"candidates file {path} is empty")
    frame = pd.DataFrame(rows)
    frame["qid"] = frame["qid"].astype(str)
    frame["docno"] = frame["docno"].astype(str)
    try:
        if "rank" in frame.columns:  # the first-stage order: rank, else score, else the file's order
            order = pd.to_numeric(frame["rank"]).astype("float64")
        elif "score" in frame.columns:
            order = -pd.to_numeric(frame["score"]).astype("float64")
        else:
            order = frame.groupby("qid", sort=False).cumcount().astype("float64")
        frame["score"] = pd.to_numeric(frame["score"]).astype("float64") if "score" in frame.columns else -order
    except (ValueError, TypeError) as err:
        raise CliError(f"{path}: 'rank' and 'score' must be numbers ({first_line(err)})") from None
    _check_unique(frame, path)
    frame["_order"] = order
    frame = frame.sort_values(["qid", "_order"], kind="stable").drop(columns=["_order"]).reset_index(drop=True)
    frame["rank"] = frame.groupby("qid", sort=False).cumcount().astype("int64")
    return frame


def read_qrels(path) -> pd.DataFrame:
    """Qrels as ``qid, docno, label`` (label int64): a TREC qrels file (``qid 0 docno label``, read by
    ``pt.io.read_qrels``) or a BEIR-style TSV with a ``query-id  corpus-id  score`` header (which pyterrier.io does not
    read)."""
    path = require_file(path, "qrels")
    with open(path, encoding="utf-8") as f:
        first = f.readline()
    qrels = _read_beir_qrels(path) if first.lower().startswith("query-id") else _read_trec_qrels(path)
    if qrels.empty:
        raise CliError(f"qrels file {path} is empty")
    try:
        qrels["label"] = qrels["label"].astype(float).astype("int64")
    except ValueError:
        raise CliError(f"{path}: relevance labels must be integers") from None
    return qrels


def _read_trec_qrels(path: pathlib.Path):
    """A TREC qrels file through ``pt.io.read_qrels``, checked to hold 4 fields on every line."""
    import pyterrier as pt

    try:
        qrels = pt.io.read_qrels(str(path))
    except ValueError as err:  # pandas' ParserError is a ValueError
        raise _unreadable(path, _qrels_line_problem, "a TREC qrels", err) from None
    if not _plain_rows(qrels) or qrels["label"].isna().any():  # too few or too many fields on some line
        _check_lines(path, _qrels_line_problem)
    _check_columns(qrels, QRELS_COLUMNS, path, "a TREC qrels")
    return qrels[list(QRELS_COLUMNS)]


def _read_beir_qrels(path: pathlib.Path):
    """A BEIR qrels TSV (``query-id, corpus-id, score`` header) as ``qid, docno, label`` (label still text)."""
    import pandas as pd

    qrels = pd.read_csv(path, sep="\t", dtype=str)
    if len(qrels.columns) != 3:
        raise CliError(f"{path}: a BEIR qrels TSV has 3 columns (query-id, corpus-id, score)")
    qrels.columns = list(QRELS_COLUMNS)
    return qrels


def write_trec_run(frame, path: str, tag: str) -> None:
    """``qid Q0 docno rank score tag`` lines (see :class:`RunOutput`); ``-`` writes to stdout."""
    output = RunOutput(path)
    try:
        output.write(frame, tag)
    finally:
        output.discard()


class RunOutput:
    """The TREC run file a command writes, claimed before any work: its temporary file is created beside the target
    at once (so an unwritable ``--output`` fails before a model loads or a passage is scored, whoever runs the
    command, root included), filled by ``pt.io.write_results`` and renamed over the target only when complete, so
    that a failed run leaves no partial file and an existing one unchanged. ``-`` is standard output.

    Lines are ``qid Q0 docno rank score tag``, rank from 1, best first per query, scores with 6 decimals.
    """

    def __init__(self, path: str, option: str = "-o/--output"):
        self.path, self.option, self._temp = path, option, None
        if path == "-":
            return
        target = pathlib.Path(path)
        if target.is_dir():
            raise CliError(f"{option} {path} is a folder; give a file name")
        if not target.resolve().parent.is_dir():
            raise CliError(f"{option} {path}: the output folder {target.parent} does not exist")
        try:
            handle, self._temp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp",
                                                  dir=target.resolve().parent)
            os.close(handle)
        except OSError as err:
            raise CliError(f"{option} {path} cannot be written: {err.strerror or err}") from None

    def write(self, frame, tag: str) -> None:
        """Write the run and put it in place (the temporary file is renamed over the target)."""
        import pandas as pd
        import pyterrier as pt

        lines = pd.DataFrame({"qid": frame["qid"], "docno": frame["docno"],
                              "rank": frame["rank"].astype("int64") + 1,
                              "score": [f"{s:.6f}" for s in frame["score"]]})
        if self.path == "-":
            pt.io.write_results(lines, sys.stdout, run_name=tag)
            return
        try:
            with open(self._temp, "w", encoding="utf-8", newline="") as f:
                pt.io.write_results(lines, f, run_name=tag)
            os.chmod(self._temp, 0o666 & ~_umask())  # mkstemp makes it private; honour the umask as open() does
            os.replace(self._temp, self.path)
        except OSError as err:
            raise CliError(f"{self.option} {self.path} cannot be written: {err.strerror or err}") from None
        self._temp = None

    def discard(self) -> None:
        """Remove the temporary file if the run was not written (an error, an interrupt)."""
        if self._temp is not None:
            with contextlib.suppress(OSError):
                os.remove(self._temp)
            self._temp = None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def first_line(err: BaseException) -> str:
    """The first line of an error's message (a KeyError's key unquoted), so that errors stay one line."""
    text = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
    text = str(text).strip().splitlines()
    return text[0] if text else type(err).__name__
