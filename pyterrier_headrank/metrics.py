"""Middle-zone selectivity: does a reranker lift the relevant passages that the first stage left mid-list?

Definitions, per query, over the ``n`` candidates that both the first stage and the reranker ranked:

* the **top quartile** is ranks ``1..ceil(n/4)``; the **bottom quartile** the last ``ceil(n/4)`` ranks;
* the **middle zone** is what the *first stage* ranked between them (for n = 20: first-stage ranks 6 to 15);
* a middle-zone passage is **lifted** when the reranker puts it in the top quartile.

``relevant_lifted`` is the share of middle-zone relevant passages (qrels grade > 0) that are lifted,
``irrelevant_lifted`` the share of middle-zone irrelevant ones (grade <= 0 or unjudged), both pooled over all queries
(every middle-zone passage counts once). ``gap_pp`` is their difference in percentage points: a selective reranker
lifts relevant passages much more often than irrelevant ones; a reranker that only shuffles has a gap near 0.

Use it beside ``pt.Experiment`` on the same result frames::

    table = pt.Experiment([first_stage_res, reranked_res], topics, qrels, [nDCG@10], names=["BM25", "HeadRank"])
    table["selectivity_gap_pp"] = [selectivity(r, first_stage_res, qrels).gap_pp for r in (first_stage_res, reranked_res)]

or :func:`selectivity_table` for several systems at once.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Dict, Sequence, Tuple, Union

import numpy as np
import pandas as pd

from .frames import first_stage_order


@dataclass(frozen=True)
class Selectivity:
    """Shares of middle-zone relevant and irrelevant passages lifted into the top quartile, and their gap."""

    relevant_lifted: float
    irrelevant_lifted: float
    gap_pp: float
    relevant_in_middle: int
    irrelevant_in_middle: int
    queries: int

    def as_dict(self) -> dict:
        return asdict(self)


def _ranked(frame: pd.DataFrame, what: str) -> pd.DataFrame:
    missing = {"qid", "docno"} - set(frame.columns)
    if missing:
        raise ValueError(f"HeadRank selectivity: the {what} frame lacks columns {sorted(missing)}")
    if "rank" not in frame.columns and "score" not in frame.columns:
        raise ValueError(f"HeadRank selectivity: the {what} frame needs a 'rank' or a 'score' column")
    frame = frame[["qid", "docno"] + [c for c in ("rank", "score") if c in frame.columns]].copy()
    frame["qid"] = frame["qid"].astype(str)
    frame["docno"] = frame["docno"].astype(str)
    frame = first_stage_order(frame, by=("score", "rank")).drop_duplicates(["qid", "docno"])
    frame["position"] = frame.groupby("qid").cumcount()
    return frame[["qid", "docno", "position"]]


def quarter(n):
    """The size of the top (and of the bottom) quartile of a list of ``n``: ``ceil(n / 4)`` (``n`` may be an array)."""
    return np.ceil(np.asarray(n) / 4).astype(int)


def in_middle_zone(position, n):
    """Whether the 0-based first-stage ``position`` of a list of ``n`` lies in its middle zone: between the top and
    the bottom quartile; lists of fewer than 3 have none. Both arguments may be arrays (or Series) of one length."""
    size = quarter(n)
    return (position >= size) & (position < np.asarray(n) - size) & (np.asarray(n) >= 3)


def selectivity(reranked: pd.DataFrame, first_stage: pd.DataFrame, qrels: pd.DataFrame) -> Selectivity:
    """Middle-zone selectivity of ``reranked`` relative to ``first_stage`` (see the module docstring).

    ``qrels`` has PyTerrier's columns ``qid, docno, label``. Queries whose lists have fewer than 3 common candidates
    have no middle zone and are skipped. Shares are NaN when no passage of that kind is in any middle zone.
    """
    if not {"qid", "docno", "label"} <= set(qrels.columns):
        raise ValueError("HeadRank selectivity: qrels need the columns qid, docno, label")
    before = _ranked(first_stage, "first-stage").rename(columns={"position": "before"})
    after = _ranked(reranked, "reranked").rename(columns={"position": "after"})
    both = before.merge(after, on=["qid", "docno"], how="inner")
    # re-number within the common candidates, so that a cut list does not shift the quartiles
    both = both.sort_values(["qid", "before"], kind="stable")
    both["before"] = both.groupby("qid").cumcount()
    both = both.sort_values(["qid", "after"], kind="stable")
    both["after"] = both.groupby("qid").cumcount()
    grades = qrels[["qid", "docno", "label"]].astype({"qid": str, "docno": str}).drop_duplicates(["qid", "docno"])
    both = both.merge(grades, on=["qid", "docno"], how="left")
    both["label"] = both["label"].fillna(0)
    n = both.groupby("qid")["docno"].transform("size")
    middle = in_middle_zone(both["before"], n)
    lifted = both["after"] < quarter(n)
    relevant = both["label"] > 0
    rel_mid, irr_mid = middle & relevant, middle & ~relevant
    n_rel, n_irr = int(rel_mid.sum()), int(irr_mid.sum())
    share_rel = float((lifted & rel_mid).sum() / n_rel) if n_rel else math.nan
    share_irr = float((lifted & irr_mid).sum() / n_irr) if n_irr else math.nan
    return Selectivity(share_rel, share_irr, 100.0 * (share_rel - share_irr), n_rel, n_irr,
                       int(both.loc[n >= 3, "qid"].nunique()))


def selectivity_table(systems: Union[Dict[str, pd.DataFrame], Sequence[pd.DataFrame]], first_stage: pd.DataFrame,
                      qrels: pd.DataFrame, names: Sequence[str] = None) -> pd.DataFrame:
    """One row per system (``name`` and the :class:`Selectivity` fields), in the order given: joins with the table
    that ``pt.Experiment(..., names=...)`` returns on the ``name`` column."""
    if isinstance(systems, dict):
        names, frames = list(systems), list(systems.values())
    else:
        frames = list(systems)
        names = list(names) if names is not None else [f"system {i}" for i in range(len(frames))]
    if len(names) != len(frames):
        raise ValueError("HeadRank selectivity: one name per system")
    rows = [{"name": name, **selectivity(frame, first_stage, qrels).as_dict()} for name, frame in zip(names, frames)]
    return pd.DataFrame(rows)


def ndcg10(scores: Dict[str, Tuple[Sequence[str], np.ndarray]], qrels: pd.DataFrame) -> float:
    """Mean nDCG@10 (ir_measures) of runs given as ``{qid: (docnos, scores)}``, against full ``qrels``."""
    import ir_measures

    rows = [(q, d, float(s)) for q, (docnos, values) in scores.items() for d, s in zip(docnos, values)]
    run = pd.DataFrame(rows, columns=["query_id", "doc_id", "score"])
    judged = qrels[qrels["qid"].isin(scores.keys())]
    qrels_ir = pd.DataFrame({"query_id": judged["qid"], "doc_id": judged["docno"],
                             "relevance": judged["label"].astype(int)})
    values = {row.query_id: row.value for row in ir_measures.iter_calc([ir_measures.parse_measure("nDCG@10")],
                                                                        qrels_ir, run)}
    return float(np.mean([values.get(q, 0.0) for q in scores])) if scores else float("nan")
