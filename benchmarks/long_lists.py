#!/usr/bin/env python
"""Long lists: how consistent window merging is, which merge to use, and whether the top 100 beats the top 20.

A list longer than one prompt window is scored in several windows and merged (:mod:`pyterrier_headrank.windows`).
For each collection this script reranks every judged query's first-stage top ``--depth`` (100) with the model's
default reranker (``HeadRank(model)``), once per window overlap in ``--overlaps``, and its top ``--short`` (20, one
window) as the reference. Per-window scores are stored (``$HEADRANK_PROFILES``), so every merge of
:data:`~pyterrier_headrank.windows.MERGES` is compared on the same passes. It reports:

* **consistency**: the passages that a later window shares with the window before it (anchors and overlap), scored
  in both: mean Spearman correlation of their two scores, over window pairs;
* **nDCG@10** of each (overlap, merge), attention alone and fused with the first stage at the default fit's weight,
  and of HeadRank's own ranking (the default merge, then the cascade of :mod:`pyterrier_headrank.cascade`), with a
  paired t-test (uncorrected) against reranking the top ``--short`` the same way;
* seconds per list (the window passes; the cascade adds one window of ``rescore_top`` passages per list).

    .venv/bin/python benchmarks/long_lists.py --model smollm2-135m --collections dl21-bm25 scifact

Writes ``benchmarks/results/long_lists_<model>.md`` / ``.csv``.
"""
from __future__ import annotations

import argparse
import datetime
import pathlib
import pickle
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    COLLECTIONS,
    RESULTS,
    candidate_lists,
    grouped,
    paired_experiment,
    quiet_offline_environment,
    with_previous,
)


def window_passes(model: str, name: str, depth: int, overlap: int, threads: int):
    """``(lists, [(plan, window scores)], seconds per list)`` for ``name``'s top ``depth``, stored once."""
    import torch
    from head_profiles import PROFILES

    from pyterrier_headrank import HeadRank

    path = PROFILES / model / f"long.{name}.top{depth}.overlap{overlap}.pkl"
    lists = grouped(candidate_lists(name, depth)[0])
    if path.exists():
        with open(path, "rb") as f:
            stored = pickle.load(f)
        if [q for q, *_ in lists] == stored["qids"]:
            return lists, stored["passes"], stored["seconds"]
    torch.set_num_threads(threads)
    reranker = HeadRank(model, window_overlap=overlap)
    reranker.engine()
    started, passes = time.time(), []
    for i, (_, query, _, texts, _) in enumerate(lists):
        passes += reranker.window_plan_scores([(query, texts)])
        if (i + 1) % 25 == 0:
            print(f"  {name} top-{depth} overlap {overlap}: {i + 1}/{len(lists)}, {time.time() - started:.0f} s",
                  flush=True)
    seconds = (time.time() - started) / max(1, len(lists))
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump({"qids": [q for q, *_ in lists], "passes": passes, "seconds": seconds}, f)
    return lists, passes, seconds


def consistency(passes) -> tuple:
    """(mean Spearman, window pairs, mean shared passages): a later window against the one before it, over the
    passages both scored."""
    import numpy as np
    from scipy.stats import spearmanr

    rhos, sizes = [], []
    for plan, scores in passes:
        for w in range(1, len(plan)):
            before = dict(zip(plan[w - 1], scores[w - 1]))
            shared = [(before[i], s) for i, s in zip(plan[w], scores[w]) if i in before]
            if len(shared) >= 3:
                a, b = np.array(shared).T
                rhos.append(spearmanr(a, b)[0])
                sizes.append(len(shared))
    return (float(np.nanmean(rhos)) if rhos else float("nan")), len(rhos), (float(np.mean(sizes)) if sizes else 0.0)


def frame_of(lists, scores):
    """A result frame (qid, docno, score, rank) of one score array per list."""
    import pandas as pd

    from pyterrier_headrank.frames import add_ranks

    rows = [(qid, d, float(v)) for (qid, _, docnos, _, _), values in zip(lists, scores) for d, v in zip(docnos, values)]
    return add_ranks(pd.DataFrame(rows, columns=["qid", "docno", "score"]))


def runs_of(lists, passes, merge: str, n_anchors: int, weight: float, label: str) -> dict:
    """{attention-only name: frame, fused name: frame} of one merge (no cascade)."""
    from pyterrier_headrank.fusion import fuse_scores
    from pyterrier_headrank.windows import merge_window_scores

    merged = [merge_window_scores(plan, scores, len(docnos), n_anchors, merge)
              for (_, _, docnos, _, _), (plan, scores) in zip(lists, passes)]
    fused = [fuse_scores(first, m, weight) for (_, _, _, _, first), m in zip(lists, merged)]
    return {f"{label}, attention only": frame_of(lists, merged), f"{label}, fused": frame_of(lists, fused)}


def cascade_runs(model: str, lists, passes, overlap: int) -> dict:
    """{kind: frame} of HeadRank's own ranking (default merge, then the cascade of ``rescore_top``) on the stored
    window passes; the pools are scored here, once per list (the two kinds pick the same pools and differ only in
    the fusion, so the second reuses the first's pool scores)."""
    from pyterrier_headrank import HeadRank

    queries = [(query, texts) for _, query, _, texts, _ in lists]
    firsts = [first for *_, first in lists]
    pool_scores = {}
    runs = {}
    for kind, fuse in (("attention only", {"fuse": None}), ("fused", {})):
        reranker = HeadRank(model, window_overlap=overlap, **fuse)
        reranker.score_lists = remembered(reranker.score_lists, pool_scores)
        runs[kind] = frame_of(lists, reranker.final_scores(queries, firsts, passes))
    return runs


def remembered(score_lists, memo: dict):
    """``score_lists`` that answers a batch of lists it has seen from ``memo`` (keyed by query and passages)."""
    def score(lists, desc=None):
        key = tuple((query, tuple(passages)) for query, passages in lists)
        if key not in memo:
            memo[key] = score_lists(lists, desc)
        return memo[key]
    return score


def measure(args, name: str):
    """One collection's rows: every (depth, overlap, merge) against the top-``short`` reference."""
    import pandas as pd

    from pyterrier_headrank import HeadRank
    from pyterrier_headrank.windows import DEFAULT_MERGE, MERGES

    default = HeadRank(args.model)
    weight = default.fuse or 0.0
    qrels = candidate_lists(name, args.short)[1]
    short_lists, short_passes, short_seconds = window_passes(args.model, name, args.short, 0, args.threads)
    references = runs_of(short_lists, short_passes, DEFAULT_MERGE, default.n_anchors, weight, f"top {args.short}")
    rows = []
    for overlap in args.overlaps:
        lists, passes, seconds = window_passes(args.model, name, args.depth, overlap, args.threads)
        rho, pairs, shared = consistency(passes)
        windows = sum(len(plan) for plan, _ in passes) / len(passes)
        systems = {merge: runs_of(lists, passes, merge, default.n_anchors, weight, "long") for merge in MERGES}
        if args.cascade:
            systems[f"{DEFAULT_MERGE}, then cascade (HeadRank)"] = {
                f"long, {kind}": run for kind, run in cascade_runs(args.model, lists, passes, overlap).items()}
        for merge, runs in systems.items():
            for kind in ("attention only", "fused"):
                reference = references[f"top {args.short}, {kind}"]
                long = runs[f"long, {kind}"]
                table = paired_experiment({"short": reference, "long": long}, qrels, correction=None)
                short_ndcg, long_ndcg = table["nDCG@10"].tolist()
                rows.append({"collection": name, "queries": len(lists), "overlap": overlap, "merge": merge,
                             "scores": kind, "windows_per_list": windows, "consistency_spearman": rho,
                             "window_pairs": pairs, "shared_per_pair": shared, f"ndcg10_top{args.short}": short_ndcg,
                             f"ndcg10_top{args.depth}": long_ndcg, "delta": long_ndcg - short_ndcg,
                             "p": table["nDCG@10 p-value"].iloc[1], "seconds_per_list": seconds,
                             f"seconds_per_list_top{args.short}": short_seconds})
    return pd.DataFrame(rows)


def write_report(args, table, path, kept: int = 0):
    from pyterrier_headrank.ranking_settings import DEFAULT_OVERLAP
    from pyterrier_headrank.windows import DEFAULT_MERGE

    short, depth = f"ndcg10_top{args.short}", f"ndcg10_top{args.depth}"
    lines = [f"# Long lists: window merging ({args.model})", "",
             f"Written {datetime.date.today().isoformat()} by `benchmarks/long_lists.py --model {args.model}`. Every "
             f"judged query; the default reranker `HeadRank({args.model!r})` on the first-stage top {args.depth} "
             f"(several windows of at most 50 passages, 3 anchors, later windows balanced) against the same reranker "
             f"on the top {args.short} (one window). Consistency: mean Spearman correlation between the scores that "
             f"two consecutive windows give the passages they share (anchors and overlap). p: paired t-test of "
             f"top {args.depth} against top {args.short}, uncorrected. HeadRank's default: overlap {DEFAULT_OVERLAP}, "
             f"merge `{DEFAULT_MERGE}`."
             + (f" {kept} rows are kept from the previous run of this script (collections or overlaps this run did "
                "not measure again)." if kept else ""), "",
             f"| collection | overlap | merge | scores | windows a list | consistency (pairs, shared) | "
             f"nDCG@10 top {args.short} | nDCG@10 top {args.depth} | difference | p | s a list (top {args.short}) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in table.to_dict("records"):
        flag = "" if r["delta"] >= 0 else " **worse**"
        lines.append(
            f"| {COLLECTIONS[r['collection']].label} | {r['overlap']} | {r['merge']} | {r['scores']} | "
            f"{r['windows_per_list']:.2f} | {r['consistency_spearman']:.3f} ({r['window_pairs']}, "
            f"{r['shared_per_pair']:.1f}) | {r[short]:.4f} | {r[depth]:.4f} | {r['delta']:+.4f}{flag} | "
            f"{r['p']:.3g} | {r['seconds_per_list']:.1f} ({r[f'seconds_per_list_top{args.short}']:.1f}) |")
    path.write_text("\n".join(lines) + "\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--collections", nargs="+", default=["dl21-bm25", "scifact"])
    parser.add_argument("--depth", type=int, default=100)
    parser.add_argument("--short", type=int, default=20)
    parser.add_argument("--overlaps", type=int, nargs="+", default=[0, 10])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-cascade", dest="cascade", action="store_false",
                        help="leave out HeadRank's cascade rows (they score one more window per list and overlap)")
    args = parser.parse_args(argv)
    quiet_offline_environment()
    import pandas as pd

    stem = RESULTS / f"long_lists_{args.model}"
    table = pd.concat([measure(args, name) for name in args.collections], ignore_index=True)
    table, kept = with_previous(table, stem.with_suffix(".csv"), ["collection", "overlap", "merge", "scores"])
    table.to_csv(stem.with_suffix(".csv"), index=False)
    write_report(args, table, stem.with_suffix(".md"), kept)
    print(stem.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
