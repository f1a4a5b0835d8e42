"""Middle-zone selectivity on hand-made rankings."""
import math

import numpy as np
import pandas as pd
import pytest

from pyterrier_headrank.metrics import selectivity, selectivity_table
from pyterrier_headrank.training.pairs import middle_zone


def _frame(qid, docnos):
    """A ranking of ``docnos`` (best first) with descending scores."""
    return pd.DataFrame({"qid": qid, "docno": docnos, "score": np.arange(len(docnos), 0, -1, dtype=float),
                         "rank": np.arange(len(docnos))})


# 8 candidates: top quartile = first 2 ranks, middle zone = first-stage ranks 3..6, bottom = 7..8
FIRST = pd.concat([_frame("a", [f"a{i}" for i in range(8)]), _frame("b", [f"b{i}" for i in range(8)])])
QRELS = pd.DataFrame({"qid": ["a", "a", "a", "b", "b"], "docno": ["a0", "a3", "a5", "b4", "b2"],
                      "label": [1, 2, 1, 1, 0]})
# middle relevant: a3, a5, b4 (3); middle irrelevant: a2, a4, b2 (judged 0), b3, b5 (5)


def test_identity_lifts_nothing():
    result = selectivity(FIRST, FIRST, QRELS)
    assert (result.relevant_lifted, result.irrelevant_lifted, result.gap_pp) == (0.0, 0.0, 0.0)
    assert (result.relevant_in_middle, result.irrelevant_in_middle, result.queries) == (3, 5, 2)


def test_shares_and_gap_by_hand():
    reranked = pd.concat([
        _frame("a", ["a3", "a2", "a0", "a1", "a4", "a5", "a6", "a7"]),   # lifts a3 (relevant), a2 (irrelevant)
        _frame("b", ["b4", "b0", "b1", "b2", "b3", "b5", "b6", "b7"]),   # lifts b4 (relevant)
    ])
    result = selectivity(reranked, FIRST, QRELS)
    assert result.relevant_lifted == pytest.approx(2 / 3)
    assert result.irrelevant_lifted == pytest.approx(1 / 5)
    assert result.gap_pp == pytest.approx(100 * (2 / 3 - 1 / 5))


def test_ranks_by_score_and_ignores_row_order():
    reranked = _frame("a", ["a5", "a4", "a0", "a1", "a2", "a3", "a6", "a7"]).sample(frac=1.0, random_state=3)
    result = selectivity(reranked.drop(columns="rank"), FIRST[FIRST.qid == "a"], QRELS)
    assert result.relevant_lifted == pytest.approx(1 / 2)     # a5 of a3, a5
    assert result.irrelevant_lifted == pytest.approx(1 / 2)   # a4 of a2, a4


def test_no_middle_zone_gives_nan():
    tiny = _frame("c", ["c0", "c1"])
    result = selectivity(tiny, tiny, pd.DataFrame({"qid": ["c"], "docno": ["c0"], "label": [1]}))
    assert math.isnan(result.relevant_lifted) and result.queries == 0


def test_table_and_errors():
    table = selectivity_table({"BM25": FIRST, "same": FIRST}, FIRST, QRELS)
    assert list(table["name"]) == ["BM25", "same"] and (table["gap_pp"] == 0).all()
    with pytest.raises(ValueError, match="HeadRank"):
        selectivity(FIRST.drop(columns=["score", "rank"]), FIRST, QRELS)
    with pytest.raises(ValueError, match="HeadRank"):
        selectivity(FIRST, FIRST, QRELS.rename(columns={"label": "relevance"}))


def test_middle_zone_matches_alignment_definition():
    assert np.flatnonzero(middle_zone(20)).tolist() == list(range(5, 15))
    assert np.flatnonzero(middle_zone(8)).tolist() == [2, 3, 4, 5]
    assert not middle_zone(2).any()
