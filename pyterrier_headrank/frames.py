"""Small helpers on PyTerrier result frames (``qid, docno, score, rank, ...``) shared across the package."""
from __future__ import annotations

import re
from typing import Tuple

import numpy as np
import pandas as pd


def add_ranks(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with a ``rank`` column from ``score`` per ``qid`` (0 = best; ties in row order).

    The same ranks as ``pt.model.add_ranks``, computed without its in-place ``drop``, which warns on pandas 3.1
    (PDEP-8); a new frame is returned and ``frame`` is left as it is.
    """
    ranks = frame.groupby("qid", sort=False)["score"].rank(ascending=False, method="first")
    return frame.drop(columns=["rank"], errors="ignore").assign(rank=ranks.astype("int64") - 1)


def first_stage_order(frame: pd.DataFrame, by: Tuple[str, ...] = ("rank", "score")) -> pd.DataFrame:
    """``frame`` with a fresh 0..n-1 index, sorted by qid and then by the first column of ``by`` that it has
    (``rank`` ascending, ``score`` descending; else as given), stably. The default is the order in which the
    listwise rerankers (HeadRank, ICR, RankGPT), ``fit`` and the score cache read a candidate list; evaluation
    reads a result frame by ``("score", "rank")``, as the measures do (a reranker's rank column may be stale)."""
    frame = frame.reset_index(drop=True)
    for column in by:
        if column in frame.columns:
            return frame.sort_values(["qid", column], ascending=[True, column == "rank"], kind="stable")
    return frame


#: a UTF-16 surrogate code point on its own (Python keeps them in str; UTF-8 cannot encode them)
LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def clean_text(text) -> str:
    """Passage text as a string: NaN/None become empty (scored as an empty passage, kept in the ranking), and a lone
    surrogate (a broken UTF-16 escape such as ``"\\ud800"`` in JSON, which no tokenizer can encode) becomes U+FFFD,
    the replacement character."""
    if text is None or (isinstance(text, float) and np.isnan(text)):
        return ""
    text = str(text)
    return text if text.isascii() else LONE_SURROGATE.sub("\ufffd", text)


def order_scores(count: int) -> np.ndarray:
    """Scores that rank ``count`` candidates in the order given (``-position``): what stands in for the first
    stage's scores, in fusion and in ``fit``, when a list comes without a ``score`` column."""
    return -np.arange(count, dtype=np.float64)


def first_stage_scores(group: pd.DataFrame) -> np.ndarray:
    """One list's first-stage scores: its ``score`` column, else :func:`order_scores` (the group must be in
    first-stage order, see :func:`first_stage_order`)."""
    if "score" in group.columns:
        return group["score"].to_numpy(dtype=np.float64)
    return order_scores(len(group))


# ---- checks of a candidate frame, shared by the rerankers and the score cache (errors name the caller) ----------
def check_is_frame(inp, name: str) -> None:
    if not isinstance(inp, pd.DataFrame):
        raise TypeError(f"{name}: expected a pandas DataFrame of candidates, got {type(inp).__name__}")


def check_qids(inp: pd.DataFrame, name: str) -> None:
    """Every row needs the qid of its query."""
    if inp["qid"].isna().any():
        rows = inp.index[inp["qid"].isna()].tolist()
        raise ValueError(f"{name}: {len(rows)} row(s) have no qid (NaN or None), e.g. row(s) {rows[:3]}; every "
                         f"candidate needs the qid of its query")


def check_numeric_score(inp: pd.DataFrame, name: str) -> None:
    """A ``score`` column, where there is one, holds numbers: it is the first stage's score, which orders a list that
    has no ``rank`` column and is fused with the reranker's; strings would sort as text ("10" before "9")."""
    if "score" in inp.columns and len(inp) and not pd.api.types.is_numeric_dtype(inp["score"]):
        raise ValueError(f"{name}: the 'score' column has dtype {inp['score'].dtype}, not numbers (e.g. "
                         f"{inp['score'].iloc[0]!r}); it is read as the first stage's score, so convert it "
                         f"(`df.assign(score=pd.to_numeric(df.score))`) or drop it")


def clean_query(query, what: str, name: str) -> str:
    """A query's text, stripped; refused when empty. ``what`` names it in the error ("the query of qid '7'")."""
    text = clean_text(query).strip()
    if not text:
        raise ValueError(f"{name}: {what} is empty; {name} needs query text to rerank")
    return text


def query_of(queries: pd.Series, qid, name: str) -> str:
    """The one query text of a qid's rows (``queries``: their query column), cleaned; several texts are refused."""
    values = queries.unique()
    if len(values) != 1:
        raise ValueError(f"{name}: qid {qid!r} has {len(values)} different query texts")
    return clean_query(values[0], f"the query of qid {qid!r}", name)
