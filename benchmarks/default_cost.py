#!/usr/bin/env python
"""What each shipped default costs per query: ``HeadRank(model)`` with its registered fit, as a user runs it.

For each model with a registered fit: the load time (first use: weights read and dequantised), then the seconds per
query of ``transform`` over SciFact test queries (Pyserini BM25 top 20, text attached), one query at a time after one
untimed warm-up query, with the machine's load average beside it (the numbers depend on what else runs). The pass
stops at the fit's deepest head, so this is what a user pays, unlike the profile passes of ``size_curve.py`` (every
layer, every head read).

    .venv/bin/python benchmarks/default_cost.py --queries 20

Writes ``benchmarks/results/default_cost.md`` / ``.json``.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import statistics
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from _common import RESULTS, quiet_offline_environment  # noqa: E402

#: the machine-readable report; a run rewrites it, keeping the rows of the models it does not measure
REPORT = RESULTS / "default_cost.json"


def measure(model: str, frame, threads: int) -> dict:
    """Load time and per-query seconds of ``HeadRank(model)`` on ``frame`` (one warm-up query, then each query)."""
    from pyterrier_headrank import HeadRank

    reranker = HeadRank(model, device="cpu")
    qids = list(dict.fromkeys(frame.qid))
    started = time.perf_counter()
    reranker(frame[frame.qid == qids[0]])  # loads the model, then one query
    first = time.perf_counter() - started
    seconds = []
    for qid in qids[1:]:
        started = time.perf_counter()
        reranker(frame[frame.qid == qid])
        seconds.append(time.perf_counter() - started)
    heads = reranker.heads
    return {"model": model, "fit": pathlib.Path(str(reranker.default_fit)).name, "heads": len(heads),
            "deepest_layer": heads.deepest_layer, "layers": reranker.engine().reader.num_layers, "threads": threads,
            "first_query_with_load_s": round(first, 1), "queries_timed": len(seconds),
            "median_s": round(statistics.median(seconds), 2), "mean_s": round(statistics.mean(seconds), 2),
            "load_average": round(os.getloadavg()[0], 2)}


def merged_rows(measured: list) -> list:
    """``measured`` with the previous report's rows of the models it does not cover (in their order, first)."""
    new = {row["model"] for row in measured}
    kept = [row for row in json.loads(REPORT.read_text()) if row["model"] not in new] if REPORT.exists() else []
    return kept + measured


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["smollm2-135m", "qwen2.5-coder-0.5b"])
    parser.add_argument("--queries", type=int, default=20, help="SciFact test queries (the first N by qid order)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    quiet_offline_environment()
    import torch

    from pyterrier_headrank.data import get_collection
    torch.set_num_threads(args.threads)
    collection = get_collection("beir-scifact", source="shared")
    results = collection.get_results()
    qids = sorted(set(results.qid), key=lambda q: int(q) if q.isdigit() else q)[:args.queries + 1]
    frame = collection.text_loader()(results[results.qid.isin(qids) & (results["rank"] < 20)])
    today = datetime.date.today().isoformat()
    rows = merged_rows([dict(measure(model, frame, args.threads), measured=today) for model in args.models])
    REPORT.write_text(json.dumps(rows, indent=1) + "\n")
    lines = ["# Cost per query of the shipped defaults", "",
             "Written by `benchmarks/default_cost.py --queries N --models ...`: SciFact test, Pyserini BM25 top 20, one "
             "query per call, CPU; the load average (1 min) after each model's run says how busy the machine was. A run "
             "measures the models it names and keeps the other rows of the previous report, so each row has its date.",
             "", "| model | fit | heads | pass stops after layer | first query incl. load (s) | median s/query | "
             "mean s/query | queries | threads | load average | measured |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['fit']} | {r['heads']} | {r['deepest_layer'] + 1} of {r['layers']} | "
              f"{r['first_query_with_load_s']} | {r['median_s']} | {r['mean_s']} | {r['queries_timed']} | "
              f"{r['threads']} | {r['load_average']} | {r['measured']} |" for r in rows]
    (RESULTS / "default_cost.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
