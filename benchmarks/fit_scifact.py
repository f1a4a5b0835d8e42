#!/usr/bin/env python
"""Fit HeadRank(smollm2-135m) on SciFact training queries; evaluate on SciFact test and DL21, on CPU.

Data (offline, from the shared folder through :mod:`pyterrier_headrank.data`):

* training: at most 211 SciFact *train* queries (a seeded sample of those whose BM25 top-20 holds a relevant
  passage: the others give no training signal), split into ``--train`` fitting and ``--valid`` validation queries;
  candidates are PISA BM25 (k1=0.9, b=0.4, porter2) top-20 over the SciFact corpus (:mod:`pyterrier_headrank.first_stage`);
* evaluation: a seeded sample of ``--test`` SciFact test queries (same PISA BM25 top-20), and DL21 (its shipped BM25
  top-100 candidates cut to the top-20; graded 0-3, out of domain for a SciFact-fitted reranker).

Systems: BM25; HeadRank zero-shot (every head of the middle layers); selected heads without alignment; selected +
aligned (the fitted reranker); and both fitted variants fused with the BM25 score (weight chosen on the validation
queries). Reported: nDCG@10 (``pt.Experiment``, paired t-test against BM25), the middle-zone selectivity gap
(:func:`pyterrier_headrank.metrics.selectivity`), fit time and reranking time per query.

    .venv/bin/python benchmarks/fit_scifact.py                    # the full run (about an hour on 2 busy cores)
    .venv/bin/python benchmarks/fit_scifact.py --train 10 --valid 4 --select-queries 6 --test 4 --dl21 4 --out /tmp/x
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pyterrier as pt  # noqa: E402
import torch  # noqa: E402
from ir_measures import nDCG  # noqa: E402

from pyterrier_headrank import HeadRank, HeadSet  # noqa: E402
from pyterrier_headrank.data import get_collection  # noqa: E402
from pyterrier_headrank.first_stage import bm25  # noqa: E402
from pyterrier_headrank.fusion import fuse, fusion_weight  # noqa: E402
from pyterrier_headrank.metrics import selectivity_table  # noqa: E402
from pyterrier_headrank.plots import head_map  # noqa: E402
from pyterrier_headrank.training.settings import FitSettings  # noqa: E402


def parse():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", type=int, default=120, help="fitting queries (SciFact train)")
    ap.add_argument("--valid", type=int, default=30, help="validation queries (held-out SciFact train)")
    ap.add_argument("--select-queries", type=int, default=48, help="training lists profiled for head selection")
    ap.add_argument("--test", type=int, default=100, help="SciFact test queries (seeded sample; 0 = all 300)")
    ap.add_argument("--dl21", type=int, default=53, help="DL21 queries (seeded sample; 53 = all)")
    ap.add_argument("--candidates", type=int, default=20)
    ap.add_argument("--max-passage-tokens", type=int, default=64)
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--lam", type=float, default=0.1)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--adapt-layers", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1 is several times faster than 2 on a machine shared with other jobs)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--save", default=None, help="also save the fitted reranker to this folder")
    ap.add_argument("--check-saved", default=None, metavar="FOLDER",
                    help="only reload a saved reranker and score the validation queries through the normal pass; "
                         "compares with the validation nDCG@10 that fit measured by replay, adds it to fit.json/.md")
    ap.add_argument("--report-only", action="store_true", help="only re-render fit.md from fit.json")
    return ap.parse_args()


def first_stage_with_text(collection, retriever, topics, k):
    res = (retriever % k)(topics)
    return collection.text_loader()(res)


def sample(frame, n, seed):
    if n <= 0 or n >= len(frame):
        return frame.reset_index(drop=True)
    return frame.sample(n=n, random_state=seed).sort_values("qid").reset_index(drop=True)


def timed(system, frame):
    started = time.time()
    out = system(frame)
    return out, (time.time() - started) / max(1, frame["qid"].nunique())


def load_data(args, log):
    """Training, validation and evaluation frames (deterministic for a seed)."""
    scifact = get_collection("beir-scifact")
    scifact_train = get_collection("beir-scifact/train")
    retriever = bm25(scifact, num_results=100)
    train_qrels = scifact_train.get_qrels()
    train_topics = scifact_train.get_topics()
    train_topics = train_topics[train_topics.qid.isin(train_qrels.qid)]
    train_res = first_stage_with_text(scifact, retriever, train_topics, args.candidates)
    hit = train_res.merge(train_qrels[train_qrels.label > 0], on=["qid", "docno"]).qid.unique()
    pool = train_topics[train_topics.qid.isin(hit)].sample(frac=1.0, random_state=args.seed)
    pool = pool.head(min(211, args.train + args.valid))
    fit_topics, valid_topics = pool.head(args.train), pool.iloc[args.train:]
    fit_res = train_res[train_res.qid.isin(fit_topics.qid)]
    valid_res = train_res[train_res.qid.isin(valid_topics.qid)]
    log["data"] = {"scifact_train_judged": int(len(train_topics)), "with_relevant_in_top": int(len(hit)),
                   "fit_queries": int(fit_res.qid.nunique()), "valid_queries": int(valid_res.qid.nunique())}

    test_qrels = scifact.get_qrels()
    test_topics = scifact.get_topics()
    test_topics = sample(test_topics[test_topics.qid.isin(test_qrels.qid)], args.test, args.seed)
    test_res = first_stage_with_text(scifact, retriever, test_topics, args.candidates)
    dl21 = get_collection("dl21-passage-bm25top100")
    dl21_qrels = dl21.get_qrels()
    dl21_res = dl21.get_results()
    dl21_res = dl21_res[dl21_res["rank"] < args.candidates]
    dl21_topics = sample(dl21_res[["qid", "query"]].drop_duplicates(), args.dl21, args.seed)
    dl21_res = dl21_res[dl21_res.qid.isin(dl21_topics.qid)].reset_index(drop=True)
    sets = {"SciFact test": (test_topics, test_res, test_qrels), "DL21": (dl21_topics, dl21_res, dl21_qrels)}
    log["data"].update({"scifact_test_queries": int(len(test_topics)), "dl21_queries": int(len(dl21_topics)),
                        "candidates": args.candidates})
    print(json.dumps(log["data"]), flush=True)
    return fit_res, valid_res, train_qrels, sets


def check_saved(args, out_dir):
    """Reload a saved reranker; its validation nDCG@10 through the normal pass must equal fit's (replayed) best."""
    from pyterrier_headrank.metrics import ndcg10

    log = json.loads((out_dir / "fit.json").read_text())
    _, valid_res, train_qrels, _ = load_data(args, {})
    reranker = HeadRank.from_pretrained(args.check_saved)
    t0 = time.time()
    out = reranker(valid_res)
    runs = {q: (g["docno"].astype(str).tolist(), g["score"].to_numpy()) for q, g in out.groupby("qid")}
    value = ndcg10(runs, train_qrels.astype({"qid": str, "docno": str}))
    log["saved_check"] = {"folder": str(args.check_saved), "valid_ndcg10_normal_pass": value,
                          "valid_ndcg10_fit_replay": log["fit"]["summary"]["alignment"]["valid_ndcg10_after"],
                          "seconds": round(time.time() - t0, 1)}
    print(log["saved_check"], flush=True)
    (out_dir / "fit.json").write_text(json.dumps(log, indent=1, default=str) + "\n")
    write_markdown(out_dir / "fit.md", log)


def main():
    args = parse()
    torch.set_num_threads(args.threads)
    out_dir = pathlib.Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    if args.report_only:
        write_markdown(out_dir / "fit.md", json.loads((out_dir / "fit.json").read_text()))
        return
    if args.check_saved:
        check_saved(args, out_dir)
        return
    log = {"started": datetime.datetime.now().isoformat(timespec="seconds"), "args": vars(args),
           "command": " ".join(sys.argv[1:]),
           "machine": {"cpus": os.cpu_count(), "load_avg_at_start": os.getloadavg(), "python": platform.python_version(),
                       "torch": torch.__version__}}
    fit_res, valid_res, train_qrels, sets = load_data(args, log)

    # ---- fit -------------------------------------------------------------------------------------------------------
    common = dict(max_passage_tokens=args.max_passage_tokens, verbose=False)
    zero_shot = HeadRank("smollm2-135m", **common)
    t0 = time.time()
    zero_shot.engine()
    log["model_load_seconds"] = round(time.time() - t0, 1)
    aligned = HeadRank("smollm2-135m", **common)
    settings = FitSettings(k=args.k, lam=args.lam, select_queries=args.select_queries, epochs=args.epochs,
                           adapt_layers=args.adapt_layers, seed=args.seed, verbose=True)
    t0 = time.time()
    aligned.fit(fit_res, train_qrels, valid_res, train_qrels, **settings.to_dict())
    fit_seconds = time.time() - t0
    selected = HeadRank("smollm2-135m", heads=HeadSet(aligned.heads.heads), **common)  # unit weights, no LoRA
    summary = aligned.fit_summary_
    log["fit"] = {"seconds": round(fit_seconds, 1), "summary": summary}
    print(f"fit: {fit_seconds / 60:.1f} min; heads {aligned.heads.heads}", flush=True)
    head_map(aligned.head_profile_, aligned.heads, lam=args.lam, path=str(out_dir / "fit_headmap.png"),
             title=f"SmolLM2-135M, {summary['selection']['queries']} SciFact train queries\n"
                   f"nDCG@10 - {args.lam:g} x entropy; boxed: selected")
    if args.save:
        aligned.save(args.save)

    # ---- fusion weights on the validation queries ---------------------------------------------------------------
    weights = {}
    for name, system in (("selected", selected), ("aligned", aligned)):
        reranked = system(valid_res)
        weights[name], table = fusion_weight(valid_res, reranked, train_qrels)
        log.setdefault("fusion_validation", {})[name] = table.to_dict(orient="records")
    log["fusion_weights"] = weights
    print(f"fusion weights: {weights}", flush=True)

    # ---- evaluation ------------------------------------------------------------------------------------------------
    rows, per_set = [], {}
    for set_name, (topics, res, qrels) in sets.items():
        frames, seconds = {"BM25": res}, {"BM25": None}
        for name, system in (("HeadRank zero-shot (middle layers)", zero_shot), ("selected heads", selected),
                             ("selected + aligned", aligned)):
            frames[name], seconds[name] = timed(system, res)
            print(f"{set_name}: {name} {seconds[name]:.2f} s/query", flush=True)
        frames[f"selected + BM25 fusion (w={weights['selected']:g})"] = fuse(res, frames["selected heads"],
                                                                              weights["selected"])
        frames[f"selected + aligned + BM25 fusion (w={weights['aligned']:g})"] = fuse(
            res, frames["selected + aligned"], weights["aligned"])
        names = list(frames)
        table = pt.Experiment([frames[n] for n in names], topics, qrels, [nDCG @ 10], names=names, baseline=0,
                              round=4)
        sel = selectivity_table(frames, res, qrels)
        table = table.merge(sel[["name", "relevant_lifted", "irrelevant_lifted", "gap_pp"]], on="name")
        table["s_per_query"] = [seconds.get(n) for n in table["name"]]
        table.insert(0, "set", set_name)
        per_set[set_name] = table
        rows.append(table)
    results = pd.concat(rows, ignore_index=True)
    log["results"] = results.to_dict(orient="records")
    log["finished"] = datetime.datetime.now().isoformat(timespec="seconds")
    log["machine"]["load_avg_at_end"] = os.getloadavg()
    (out_dir / "fit.json").write_text(json.dumps(log, indent=1, default=str) + "\n")
    write_markdown(out_dir / "fit.md", log)
    print(results.to_string(), flush=True)


def fmt(value, digits=4):
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def write_markdown(path, log):
    """fit.md from the run's log (fit.json): setup, costs, the results table, the targets checked, notes."""
    args = argparse.Namespace(**log["args"])
    summary = log["fit"]["summary"]
    fit_seconds = log["fit"]["seconds"]
    results = pd.DataFrame(log["results"])
    sel, ali, cfg = summary["selection"], summary["alignment"], summary["settings"]
    command = log.get("command", "")
    lines = [
        "# Fitting HeadRank on SciFact (SmolLM2-135M, CPU)",
        "",
        f"Command: `.venv/bin/python benchmarks/fit_scifact.py {command}`  ",
        f"Run {log['started']} to {log['finished']}; {log['machine']['cpus']} CPU cores shared with other jobs "
        f"(load average {log['machine']['load_avg_at_start'][0]:.1f} at start, "
        f"{log['machine']['load_avg_at_end'][0]:.1f} at end), torch threads: {args.threads} (on this oversubscribed "
        f"machine one thread ran 3-4x faster than two). Times are wall-clock and vary with the other jobs' load.",
        "",
        "## Setup",
        "",
        f"- Training: {log['data']['fit_queries']} SciFact train queries for fitting, {log['data']['valid_queries']} "
        f"held-out train queries for validation (a seeded sample of the {log['data']['with_relevant_in_top']} train "
        f"queries whose PISA BM25 top-{args.candidates} holds a relevant passage).",
        f"- Evaluation: {log['data']['scifact_test_queries']} SciFact test queries (seeded sample of 300; PISA BM25 "
        f"k1=0.9 b=0.4 top-{args.candidates}) and {log['data']['dl21_queries']} DL21 queries (shipped BM25 "
        f"candidates, top-{args.candidates}; graded 0-3; out of domain for a SciFact fit).",
        f"- Passages cut to {args.max_passage_tokens} tokens; calibrated attention (\"N/A\" query); one prompt per list.",
        f"- Selection: {sel['queries']} training lists profiled, every head of layers 0-{sel['max_layer']}; "
        f"k={sel['k']}, lambda={sel['lambda']}. Heads: {[tuple(h) for h in sel['heads']['heads']]} "
        f"(the pass stops after layer {max(h[0] for h in sel['heads']['heads'])}). Head map: `fit_headmap.png`.",
        f"- Alignment: head weights (learned: {cfg['learn_weights']}; now {ali.get('head_weights')}) and LoRA "
        f"r={ali['adapter']['rank']} on {ali['adapter']['targets']} of layer(s) {ali['adapter']['layers']}, trained on "
        f"cached layer inputs (replay of layers {ali['replayed_layers'][0]}-{ali['replayed_layers'][1]}); pairwise "
        f"logistic loss over adjacent grades + {cfg['hard_negatives']} hard negatives, + Omega (gamma={cfg['gamma']}, "
        f"eta={cfg['eta']}), beta={cfg['beta']}, lr={cfg['lr']}, at most {cfg['epochs']} epochs, epochs chosen by "
        f"{ali['chosen_by']}: validation nDCG@10 by epoch "
        f"{[round(h['valid'], 4) for h in ali['history']]} (epoch 0 = selection only), best epoch {ali['best_epoch']}.",
        f"- Fusion (extra rows): `w * z(BM25) + (1 - w) * z(HeadRank)` per query, w chosen on the validation "
        f"queries: {log['fusion_weights']} (w=0 means validation preferred HeadRank alone).",
    ]
    if "saved_check" in log:
        check = log["saved_check"]
        lines.append(f"- Saved folder check: `HeadRank.from_pretrained` on the saved folder scores the validation "
                     f"queries through the normal (truncated) pass at nDCG@10 {check['valid_ndcg10_normal_pass']:.4f}; "
                     f"fit measured {check['valid_ndcg10_fit_replay']:.4f} by replaying cached layer inputs.")
    lines += [
        "",
        "## Fit cost",
        "",
        f"- Fit time: {fit_seconds / 60:.1f} min on one thread (selection pass {sel['seconds']:.0f} s; one pass per "
        f"training and validation list to cache the adapted layer's inputs {ali['cache_seconds']:.0f} s; training "
        f"{ali['train_seconds']:.0f} s for {ali['steps']} steps, validation included); model load "
        f"{log['model_load_seconds']} s, not included.",
        "",
        "## Results",
        "",
        "nDCG@10 with a paired t-test against BM25 (uncorrected) and the number of queries improved / hurt; "
        "selectivity: shares of the first stage's middle-zone (ranks 6-15 of 20) relevant / irrelevant passages "
        "lifted into the top 5, and their gap in points; s/query: reranking wall time per query (fusion costs what "
        "its reranker costs).",
        "",
        "| set | system | nDCG@10 | p vs BM25 | +/- | rel. lifted | irr. lifted | gap (pp) | s/query |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in results.to_dict(orient="records"):
        p = row.get("nDCG@10 p-value")
        plus, minus = row.get("nDCG@10 +"), row.get("nDCG@10 -")
        wl = "-" if plus is None or (isinstance(plus, float) and np.isnan(plus)) else f"{int(plus)}/{int(minus)}"
        lines.append(f"| {row['set']} | {row['name']} | {fmt(row['nDCG@10'])} | {fmt(p, 3)} | {wl} | "
                     f"{fmt(row['relevant_lifted'], 3)} | {fmt(row['irrelevant_lifted'], 3)} | "
                     f"{fmt(row['gap_pp'], 1)} | {fmt(row['s_per_query'], 2)} |")
    lines += ["", "## Targets", ""]
    for set_name, table in results.groupby("set", sort=False):
        value = dict(zip(table["name"], table["nDCG@10"]))
        aligned = value["selected + aligned"]
        checks = [("BM25", value["BM25"]), ("zero-shot", value["HeadRank zero-shot (middle layers)"]),
                  ("selection only", value["selected heads"])]
        said = ", ".join(f"{'above' if aligned > v else 'NOT above'} {n} ({aligned:.4f} vs {v:.4f})"
                         for n, v in checks)
        lines.append(f"- {set_name}: fitted HeadRank (selected + aligned) is {said}.")
    lines.append(f"- Fit time {fit_seconds / 60:.1f} min: {'under' if fit_seconds < 1800 else 'NOT under'} 30 min.")
    lines += ["", "![head map](fit_headmap.png)", ""]
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
