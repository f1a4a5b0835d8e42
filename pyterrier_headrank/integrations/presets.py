"""Named training sets for ``headrank fit --preset NAME``: the paper's recipe, reproducible.

The paper trains on 211 judged queries and does not name them; our best reading is TREC DL 2021 + 2022 + 2023
passage (53 + 76 + 82 judged queries, graded 0-3, which suits its pairs of adjacent relevance levels). ``paper``
builds that set through ir_datasets (queries, qrels, the tracks' official first-stage top-100 and passage text;
it needs network the first time), and ``paper-offline`` takes DL21 alone from the shared folder.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, Tuple

import pandas as pd


@dataclass(frozen=True)
class FitPreset:
    """A training set (collections whose shipped first stage gives the candidates) and the fit settings it uses."""

    name: str
    collections: Tuple[str, ...]
    description: str
    cutoff: int = 20
    fit: Dict[str, object] = field(default_factory=dict)


_DL = "irds:msmarco-passage-v2/trec-dl-{}/judged"
PRESETS: Dict[str, FitPreset] = {p.name: p for p in (
    FitPreset("paper", tuple(_DL.format(year) for year in (2021, 2022, 2023)),
              "TREC DL 2021-2023 passage through ir_datasets (211 judged queries; needs network once)"),
    FitPreset("paper-offline", ("dl21-passage-bm25top100",),
              "TREC DL 2021 passage from the shared folder (53 judged queries), offline"),
)}


def training_set(preset: FitPreset, open_collection: Callable, cutoff: int = None, queries: int = None):
    """``(candidates, qrels)`` of ``preset``: each collection's first-stage top ``cutoff`` for its judged queries
    (at most ``queries`` per collection), text included, concatenated in collection order."""
    frames, judged = [], []
    cutoff = preset.cutoff if cutoff is None else cutoff
    for name in preset.collections:
        collection = open_collection(name)
        qrels = collection.get_qrels()
        run = collection.get_results()
        run = run[run["qid"].isin(set(qrels["qid"]))]
        if queries:
            run = run[run["qid"].isin(list(dict.fromkeys(run["qid"]))[:queries])]
        run = run.sort_values(["qid", "rank"], kind="stable")
        frames.append(run[run["rank"] < cutoff])
        judged.append(qrels[qrels["qid"].isin(set(run["qid"]))])
    return pd.concat(frames, ignore_index=True), pd.concat(judged, ignore_index=True)
