"""What the benchmark scripts share: the offline collections with their first stages, and the environment.

A benchmark *collection* here is a set of judged queries, each with its first stage's top-``k`` candidate list (text
included) in first-stage order, and the qrels. :func:`candidate_lists` builds them the same way for every script.
"""
from __future__ import annotations

import os
import pathlib
import sys
from dataclasses import dataclass
from typing import Dict, List

ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
os.environ.setdefault("HEADRANK_SHARED", str(ROOT.parent / "shared"))  # the shared folder beside the checkout


def quiet_offline_environment() -> None:
    """No network, no bars, no library chatter: benchmarks run on local files and print only their tables."""
    for key, value in {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error",
                       "HF_HUB_DISABLE_PROGRESS_BARS": "1", "TQDM_DISABLE": "1"}.items():
        os.environ.setdefault(key, value)
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))


@dataclass(frozen=True)
class BenchCollection:
    """A named benchmark collection: the shared set it reads and how its first stage is made.

    ``first_stage`` is ``"candidates"`` (the shipped candidate lists, DL21), ``"run"`` (the shipped BM25 run) or
    ``"pisa"`` (PISA BM25, porter2, over the corpus).
    """

    name: str
    shared: str
    first_stage: str
    label: str
    sample: int = 0  # a seeded sample of this many judged queries (training sets, size-curve subsets); 0: all


COLLECTIONS: Dict[str, BenchCollection] = {c.name: c for c in (
    BenchCollection("dl21-bm25", "dl21-passage-bm25top100", "candidates", "DL21 (BM25)"),
    BenchCollection("dl21-rm3", "dl21-passage-rm3-top100", "candidates", "DL21 (BM25+RM3)"),
    BenchCollection("dl21-splade", "dl21-passage-spladepp-top100", "candidates", "DL21 (SPLADE++)"),
    BenchCollection("scifact-train", "beir-scifact/train", "pisa", "SciFact train (PISA BM25, 100 queries)", 100),
    BenchCollection("scifact-train-300", "beir-scifact/train", "pisa", "SciFact train (PISA BM25, 300 queries)", 300),
    BenchCollection("scifact", "beir-scifact", "run", "SciFact test (Pyserini BM25)"),
    BenchCollection("scifact-100", "beir-scifact", "run", "SciFact test (Pyserini BM25, 100 queries)", 100),
    BenchCollection("cranfield", "cranfield", "pisa", "Cranfield (PISA BM25)"),
    BenchCollection("cacm", "cacm", "pisa", "CACM (PISA BM25)"),
    BenchCollection("cisi", "cisi", "pisa", "CISI (PISA BM25)"),
    BenchCollection("vaswani", "vaswani", "pisa", "Vaswani (PISA BM25)"),
)}


def candidate_lists(name: str, k: int = 20):
    """``(frame, qrels)`` for the judged queries of ``name``: ``qid, query, docno, score, rank, text``, the first
    stage's top ``k`` per query, sorted by qid then first-stage rank (from 0)."""
    import pyterrier as pt

    from pyterrier_headrank.data import get_collection
    from pyterrier_headrank.first_stage import bm25

    spec = COLLECTIONS[name]
    collection = get_collection(spec.shared, source="shared")
    qrels = collection.get_qrels()
    topics = collection.get_topics()
    topics = topics[topics.qid.isin(set(qrels.qid[qrels.label > 0]))].reset_index(drop=True)
    if spec.sample and spec.sample < len(topics):
        topics = topics.sample(spec.sample, random_state=0).reset_index(drop=True)
    if spec.first_stage == "pisa":
        frame = (bm25(collection, num_results=max(k, 100)) % k >> collection.text_loader())(topics)
    else:
        frame = collection.get_results()
        frame = frame[frame.qid.isin(set(topics.qid)) & (frame["rank"] < k)]
    frame = frame.sort_values(["qid", "rank"], kind="stable").reset_index(drop=True)
    frame = pt.model.add_ranks(frame.drop(columns="rank")) if "rank" not in frame else frame
    return frame[["qid", "query", "docno", "score", "rank", "text"]], qrels[qrels.qid.isin(set(frame.qid))]


def grouped(frame) -> List[tuple]:
    """``[(qid, query, docnos, texts, first-stage scores)]`` per query, in first-stage order."""
    return [(qid, g["query"].iloc[0], list(g.docno), list(g.text), g["score"].to_numpy(float))
            for qid, g in frame.groupby("qid", sort=True)]


def paired_experiment(runs: dict, qrels, correction: str = "holm"):
    """``pt.Experiment`` over precomputed result frames ``{name: frame}`` (the first is the baseline): nDCG@10 and
    paired t-tests against it, ``correction`` over the others. Only the runs' queries are judged."""
    import warnings

    import pandas as pd
    import pyterrier as pt
    from ir_measures import nDCG

    qids = sorted(set(next(iter(runs.values())).qid))
    topics = pd.DataFrame({"qid": qids, "query": qids})  # pt.Experiment needs topics; the runs are precomputed
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pt.Experiment([run[["qid", "docno", "score", "rank"]] for run in runs.values()], topics,
                             qrels[qrels.qid.isin(qids)], [nDCG @ 10], names=list(runs), baseline=0,
                             correction=correction)


def with_previous(table, path, key: List[str]):
    """``table`` plus the rows of the previous results file ``path`` whose ``key`` it does not measure again
    (profiles and window passes are not committed, so a run on another machine may redo only some); returns
    (merged table, rows kept)."""
    import pandas as pd

    if not path.exists():
        return table, 0
    previous = pd.read_csv(path, dtype={column: str for column in key})  # "None" stays a string, not NaN
    for column in key:
        if table[column].dtype != object:
            previous[column] = previous[column].astype(table[column].dtype)
    measured = set(map(tuple, table[key].astype(str).to_numpy()))
    kept = previous[[tuple(row) not in measured for row in previous[key].astype(str).to_numpy()]]
    return pd.concat([table, kept], ignore_index=True), len(kept)
