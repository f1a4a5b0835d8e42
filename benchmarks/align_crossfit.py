#!/usr/bin/env python
"""Does the paper's alignment help out of fold? Cross-fitted selection alone against selection plus alignment.

The protocol of ``default_fit.py``: 5 folds by ``crc32(qid) % 5`` (a DL21 query lands in the same fold whichever
first stage produced its list), top-20 candidate lists, 64-token passages, the reversed prompt order. Unlike
``default_fit.py`` (which pools the four training collections from stored profiles), each collection here is fitted
on its own lists of the other four folds, through the package's public API, with real passes:

* **selection**: ``HeadRank(model, heads="zero-shot", order="reversed", max_passage_tokens=64)
  .fit(train, qrels, align=False, k=16, lam=0.1, max_layer=19)`` (the shipped recipe);
* **selection + alignment**: ``HeadRank(model, heads=<the fold's selected heads>, order="reversed", ...)
  .fit(train, qrels, select=False, align=True, **align_settings)``: LoRA on q/k of the adapted layer(s), pairwise
  loss over adjacent relevance levels plus hard negatives, Omega; ``FitSettings`` defaults unless overridden with
  ``--set name=value``; with no validation lists the fit chooses its number of epochs by ``cv_folds``-fold
  cross-fitting inside the training folds. Starting from the selection fit's heads with ``select=False`` is the same
  as ``align=True`` with selection, without a second selection pass.

Each fitted reranker scores the held-out fold's lists (attention only); the fused rows are ``fuse(first stage,
attention, 0.1)`` (``pyterrier_headrank.fusion.fuse``, the shipped weight). Every fold's fitted folders
(``HeadRank.save``) go under ``~/.cache/pyterrier-headrank/align_crossfit/<model>/<tag>/<collection>/fold<f>/`` and
every fold's runs (gzip TREC) and fit record (JSON) under ``benchmarks/results/runs/align_crossfit/<model>/<tag>/``;
a later run skips whatever is there (resume), so nothing is computed twice.

    .venv/bin/python benchmarks/align_crossfit.py --collections dl21-bm25 --folds 0,1,2,3,4
    .venv/bin/python benchmarks/align_crossfit.py --report-only --collections dl21-bm25,dl21-splade,scifact-train

Writes ``benchmarks/results/align_crossfit_<model>[_<tag>].md`` / ``.csv`` from the stored runs (collections or
folds not finished are named there as missing).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import shlex
import sys
import time
import zlib

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from _common import COLLECTIONS, RESULTS, candidate_lists, quiet_offline_environment  # noqa: E402

FOLDS = 5
RUNS = RESULTS / "runs" / "align_crossfit"
FITS = pathlib.Path(os.environ.get("HEADRANK_CACHE", pathlib.Path.home() / ".cache" / "pyterrier-headrank")) \
    / "align_crossfit"
FIRST, SELECTED, ALIGNED = "first stage", "selection", "selection + alignment"
FUSED = " fused"
#: the shipped recipe's selection settings (benchmarks/results/default_fit_smollm2-135m.md)
RECIPE = dict(order="reversed", k=16, lam=0.1, max_layer=19, passage_tokens=64, fusion_weight=0.1)


def fold_of(qid: str) -> int:
    return zlib.crc32(str(qid).encode()) % FOLDS


def log(message: str) -> None:
    print(f"[{datetime.datetime.now().strftime('%H:%M:%S')}] {message}", flush=True)


def parse_value(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def run_path(args, name: str, fold: int, system: str) -> pathlib.Path:
    slug = system.replace(" + ", "+").replace(" ", "-")
    tag = "default" if system in (SELECTED, SELECTED + FUSED) else args.tag  # selection: shared by every variant
    return RUNS / args.model / tag / name / f"fold{fold}.{slug}.res.gz"


def record_path(args, name: str, fold: int) -> pathlib.Path:
    return RUNS / args.model / args.tag / name / f"fold{fold}.json"


def fit_folder(args, name: str, fold: int, system: str) -> pathlib.Path:
    if system == SELECTED:  # selection does not depend on the alignment settings: shared by every variant
        return FITS / args.model / "default" / name / f"fold{fold}" / "selection"
    return FITS / args.model / args.tag / name / f"fold{fold}" / "aligned"


def reranker(args, heads):
    from pyterrier_headrank import HeadRank
    return HeadRank(args.model, heads=heads, order=RECIPE["order"], max_passage_tokens=RECIPE["passage_tokens"],
                    fuse=None, slot_bias=None)


def fitted(args, name, fold, system, make):
    """The fold's fitted reranker of ``system``: loaded from its saved folder, else made by ``make()`` and saved.
    Returns (reranker, seconds spent fitting now, whether it was loaded)."""
    from pyterrier_headrank import HeadRank
    folder = fit_folder(args, name, fold, system)
    if (folder / "headrank.json").exists():
        return HeadRank.from_pretrained(str(folder)), 0.0, True
    started = time.time()
    model = make()
    seconds = time.time() - started
    model.save(str(folder))
    return model, seconds, False


def select(args, name: str, fold: int, train, train_qrels, record: dict):
    """The fold's selection-only reranker. From the collection's stored all-head profile when there is one
    (``head_profiles.py``: one pass per list for all five folds instead of one per list per fold; the same
    ``HeadProfile.select`` that ``fit`` runs, on the same masses), else by ``fit(align=False)``."""
    import numpy as np
    from _profiles import Profile
    from default_fit import capped

    from pyterrier_headrank.metrics import ndcg10

    try:
        profile = Profile.load(args.model, name, RECIPE["order"], passage_tokens=RECIPE["passage_tokens"])
    except FileNotFoundError:
        profile = None
    if profile is None or profile.max_layer < RECIPE["max_layer"]:
        record["selection_from"] = "HeadRank.fit(align=False) (a selection pass over the training lists)"
        return reranker(args, "zero-shot").fit(train, train_qrels, align=False, k=RECIPE["k"], lam=RECIPE["lam"],
                                                max_layer=RECIPE["max_layer"], verbose=False)
    keep = np.array([fold_of(q) != fold for q in profile.qids])
    assert set(profile.qids[keep]) == set(train.qid), "profile and candidate lists disagree"
    view = profile.subset(keep)
    head_profile = capped(view.head_profile(), RECIPE["max_layer"])
    heads = head_profile.select(RECIPE["k"], RECIPE["lam"], name=f"fold {fold} of {name}: k={RECIPE['k']} "
                                f"lambda={RECIPE['lam']:g} on {int(keep.sum())} training lists")
    model = reranker(args, heads)
    model.head_profile_ = head_profile
    train_ndcg = ndcg10(view.lists(view.attention(heads)), train_qrels)
    model.fit_summary_ = {"made_by": "benchmarks/align_crossfit.py", "selection": {
        "queries": int(keep.sum()), "k": RECIPE["k"], "lambda": RECIPE["lam"], "max_layer": RECIPE["max_layer"],
        "heads": heads.to_dict(), "from": "stored all-head profile (head_profiles.py), HeadProfile.select",
        "train_ndcg10": round(float(train_ndcg), 4)}}
    held = profile.subset(~keep)
    record["selection_from"] = "stored all-head profile (head_profiles.py), HeadProfile.select"
    record["selection training nDCG@10 (in-sample, from the profile)"] = round(float(train_ndcg), 4)
    held_qrels = _qrels_of(name)
    held_qrels = held_qrels[held_qrels.qid.isin(set(held.qids))]
    record["selection held-out nDCG@10 from the profile"] = round(
        float(ndcg10(held.lists(held.attention(heads)), held_qrels)), 4)
    return model


def _qrels_of(name: str):
    from pyterrier_headrank.data import get_collection
    return get_collection(COLLECTIONS[name].shared, source="shared").get_qrels()


def score(model, frame):
    out = model.transform(frame)
    return out[["qid", "docno", "score", "rank"]]


def run_fold(args, name: str, fold: int, frame, qrels) -> None:
    import pyterrier as pt

    from pyterrier_headrank.fusion import fuse

    paths = {s: run_path(args, name, fold, s) for s in (SELECTED, ALIGNED)}
    if record_path(args, name, fold).exists() and all(p.exists() for p in paths.values()):
        log(f"{name} fold {fold}: done before, skipped")
        return
    held = frame.qid.map(fold_of) == fold
    train, test = frame[~held].reset_index(drop=True), frame[held].reset_index(drop=True)
    train_qrels = qrels[qrels.qid.isin(set(train.qid))]
    log(f"{name} fold {fold}: {train.qid.nunique()} training lists, {test.qid.nunique()} held-out lists")
    record = {"collection": name, "fold": fold, "train_queries": int(train.qid.nunique()),
              "test_queries": int(test.qid.nunique()), "recipe": RECIPE, "align_overrides": args.overrides,
              "threads": args.threads}
    selection, sel_seconds, loaded = fitted(args, name, fold, SELECTED,
                                            lambda: select(args, name, fold, train, train_qrels, record))
    log(f"{name} fold {fold}: selection {'loaded' if loaded else f'fitted in {sel_seconds:.0f} s'}: "
        f"{list(selection.heads.heads)}")
    aligned, ali_seconds, loaded = fitted(args, name, fold, ALIGNED, lambda: reranker(args, selection.heads).fit(
        train, train_qrels, select=False, align=True, verbose=False, **args.overrides))
    summary = (aligned.fit_summary_ or {}).get("alignment", {})
    log(f"{name} fold {fold}: alignment {'loaded' if loaded else f'fitted in {ali_seconds:.0f} s'}: "
        f"{summary.get('chosen_by')}, inner out-of-fold nDCG@10 by epoch {summary.get('cv_mean_ndcg10_by_epoch')}, "
        f"epochs {summary.get('best_epoch')}, cache {summary.get('cache_seconds')} s, "
        f"train {summary.get('train_seconds')} s")
    record.update({"selection_fit_seconds": round(sel_seconds, 1), "alignment_fit_seconds": round(ali_seconds, 1),
                   "selection": (selection.fit_summary_ or {}).get("selection"), "alignment": summary})
    first = test[["qid", "docno", "score", "rank"]]
    for system, model in ((SELECTED, selection), (ALIGNED, aligned)):
        started = time.time()
        if paths[system].exists():
            run = pt.io.read_results(str(paths[system]))
        else:
            run = score(model, test)
            paths[system].parent.mkdir(parents=True, exist_ok=True)
            pt.io.write_results(run, str(paths[system]))
            record[f"{system} scoring seconds per list"] = round((time.time() - started) / len(test.qid.unique()), 2)
        fused = fuse(first, run, RECIPE["fusion_weight"])
        pt.io.write_results(fused[["qid", "docno", "score", "rank"]],
                            str(run_path(args, name, fold, system + FUSED)))
        log(f"{name} fold {fold}: {system} scored ({time.time() - started:.0f} s)")
    if args.train_ndcg:  # in-sample nDCG@10 of both fits on their own training lists (costs two more passes each)
        from pyterrier_headrank.metrics import ndcg10
        for system, model in ((SELECTED, selection), (ALIGNED, aligned)):
            run = score(model, train)
            lists = {q: (list(g.docno), g.score.to_numpy()) for q, g in run.groupby("qid")}
            record[f"{system} training nDCG@10"] = round(ndcg10(lists, train_qrels), 4)
        lists = {q: (list(g.docno), g.score.to_numpy()) for q, g in train.groupby("qid")}
        record["first stage training nDCG@10"] = round(ndcg10(lists, train_qrels), 4)
        log(f"{name} fold {fold}: training-set nDCG@10 " + ", ".join(
            f"{s}: {record[f'{s} training nDCG@10']}" for s in (FIRST, SELECTED, ALIGNED)))
    record["finished"] = datetime.datetime.now().isoformat(timespec="seconds")
    record_path(args, name, fold).write_text(json.dumps(record, indent=1, default=str) + "\n")
    log(f"{name} fold {fold}: finished")


# ---- the report, from the stored runs only ----------------------------------------------------------------------
def per_query_ndcg(run, qrels):
    import ir_measures
    from ir_measures import nDCG

    q = qrels.rename(columns={"qid": "query_id", "docno": "doc_id", "label": "relevance"})
    r = run.rename(columns={"qid": "query_id", "docno": "doc_id"})
    q = q.astype({"query_id": str, "doc_id": str})
    r = r.astype({"query_id": str, "doc_id": str})[["query_id", "doc_id", "score"]]
    values = {m.query_id: m.value for m in ir_measures.iter_calc([nDCG @ 10], q, r)}
    return values


def collection_table(args, name: str, only=None):
    """Rows of one collection over its finished folds (of ``only``, when given), and the folds missing."""
    import numpy as np
    import pandas as pd
    import pyterrier as pt
    from scipy.stats import ttest_rel

    from pyterrier_headrank.metrics import selectivity

    systems = [SELECTED, ALIGNED, SELECTED + FUSED, ALIGNED + FUSED]
    done = [f for f in range(FOLDS) if record_path(args, name, f).exists()
            and all(run_path(args, name, f, s).exists() for s in systems) and (only is None or f in only)]
    if not done:
        return [], list(range(FOLDS)), []
    frame, qrels = candidate_lists(name)
    frame = frame[frame.qid.map(fold_of).isin(done)]
    qrels = qrels[qrels.qid.isin(set(frame.qid))]
    runs = {FIRST: frame[["qid", "docno", "score", "rank"]]}
    for s in systems:
        runs[s] = pd.concat([pt.io.read_results(str(run_path(args, name, f, s))) for f in done],
                            ignore_index=True)
    qids = sorted(set(frame.qid.astype(str)))
    per_query = {s: per_query_ndcg(r, qrels) for s, r in runs.items()}
    vectors = {s: np.array([per_query[s].get(q, 0.0) for q in qids]) for s in runs}
    rows = []
    for s in runs:
        diff = vectors[s] - vectors[FIRST]
        p = float("nan") if s == FIRST else float(ttest_rel(vectors[s], vectors[FIRST]).pvalue)
        sel = selectivity(runs[s], runs[FIRST], qrels)
        rows.append({"collection": name, "system": s, "queries": len(qids), "folds": ",".join(map(str, done)),
                     "ndcg10": float(vectors[s].mean()), "delta": float(diff.mean()), "p_vs_first": p,
                     "better": int((diff > 1e-9).sum()), "worse": int((diff < -1e-9).sum()),
                     "rel_lifted": sel.relevant_lifted, "irr_lifted": sel.irrelevant_lifted, "gap_pp": sel.gap_pp})
    paired = {}
    for a, b in ((ALIGNED, SELECTED), (ALIGNED + FUSED, SELECTED + FUSED)):
        paired[a] = float(ttest_rel(vectors[a], vectors[b]).pvalue)
    for row in rows:
        row["p_align_vs_selection"] = paired.get(row["system"], float("nan"))
    records = [json.loads(record_path(args, name, f).read_text()) for f in done]
    return rows, [f for f in range(FOLDS) if f not in done], records


def write_report(args, command: str, started: str) -> None:
    import pandas as pd

    tables, missing, records = [], {}, {}
    for name in args.collections:
        rows, absent, recs = collection_table(args, name)
        tables += rows
        missing[name], records[name] = absent, recs
    suffix = "" if args.tag == "default" else f"_{args.tag}"
    stem = RESULTS / f"align_crossfit_{args.model}{suffix}"
    table = pd.DataFrame(tables)
    complete = [n for n in args.collections if not missing[n]]
    if len(table):
        means = (table[table.collection.isin(complete)].groupby("system", sort=False)
                 [["ndcg10", "delta", "gap_pp"]].mean().reset_index())
        means.insert(0, "collection", f"mean ({len(complete)} complete)")
        table = pd.concat([table, means], ignore_index=True)
        table.round(6).to_csv((stem.parent / f"{stem.name}.csv"), index=False)
    load = os.getloadavg()
    lines = [f"# Alignment in the recipe search: cross-fitted selection vs selection + alignment ({args.model})", "",
             f"Command: `{command}`  ", *([args.note + "  "] if args.note else []),
             f"Written {datetime.datetime.now().isoformat(timespec='minutes')} (runs started {started}); machine: "
             f"{os.cpu_count()} CPU cores shared with other jobs, load average at writing "
             f"{load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f}; torch threads {args.threads}.", "",
             "Protocol (`benchmarks/align_crossfit.py`): 5 folds by crc32(qid) % 5 as in `default_fit.py`, each "
             "collection fitted on its own lists of the other four folds (not pooled across collections), top-20 "
             f"lists, {RECIPE['passage_tokens']}-token passages, reversed prompt order. Selection (the shipped recipe): "
             f"k={RECIPE['k']}, lam={RECIPE['lam']}, layers<={RECIPE['max_layer']}, by `HeadProfile.select` on the "
             "training folds' lists of a stored all-head profile (`head_profiles.py`: one pass per list serves all "
             "five folds; the same masses and selection code as `fit(align=False, k=16, lam=0.1, max_layer=19)`, "
             "which gave the identical 16 heads on a 6-list check), saved as a `HeadRank` and scored on the "
             "held-out lists by a real pass (its held-out nDCG@10 equals the profile's, recorded per fold). "
             "Alignment: the fold's selected heads, `fit(select=False, align=True"
             + "".join(f", {k}={v!r}" for k, v in args.overrides.items())
             + ")`, every other setting `FitSettings`' default (" + align_description(args.overrides) + "). Fused rows: "
             f"`fuse(first stage, attention, {RECIPE['fusion_weight']})`. nDCG@10 over the held-out lists of the "
             "finished folds; p: paired t-test (scipy, uncorrected) against the first stage; p(align): alignment vs "
             "selection alone, same fusion; +/-: queries improved / hurt vs the first stage; gap: middle-zone "
             "selectivity gap (pp) relative to the first stage (`pyterrier_headrank.metrics.selectivity`).", "",
             "| collection | system | queries | folds | nDCG@10 | delta | p | +/- | p(align) | rel. lifted | "
             "irr. lifted | gap (pp) |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]

    def fmt(v):
        return "-" if v != v else f"{v:.3g}"

    for r in tables:
        lines.append(f"| {r['collection']} | {r['system']} | {r['queries']} | {r['folds']} | {r['ndcg10']:.4f} | "
                     f"{r['delta']:+.4f} | {fmt(r['p_vs_first'])} | {r['better']}/{r['worse']} | "
                     f"{fmt(r['p_align_vs_selection'])} | {r['rel_lifted']:.3f} | {r['irr_lifted']:.3f} | "
                     f"{r['gap_pp']:.1f} |")
    if len(table):
        for r in table[table.collection.str.startswith("mean")].itertuples():
            lines.append(f"| {r.collection} | {r.system} | | | {r.ndcg10:.4f} | {r.delta:+.4f} | | | | | | "
                         f"{r.gap_pp:.1f} |")
    lines += ["", "Missing: " + ("; ".join(f"{n}: folds {', '.join(map(str, m))}" for n, m in missing.items() if m)
                                 or "nothing") + ".", "", "## Per fold: what the fits did", "",
              "| collection | fold | train lists | selection fit (s) | alignment fit (s) | cache (s) | train (s) | "
              "scoring s/list (sel / aligned) | "
              "LoRA layer (selected heads in it) | head weights after | selection in-sample nDCG@10 | "
              "inner out-of-fold nDCG@10 by epoch (0 = selection) | epochs kept | held-out sel / aligned |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, recs in records.items():
        for rec in recs:
            a = rec.get("alignment") or {}
            fold_q = held_out_fold_ndcg(args, name, rec["fold"])
            curve = a.get("cv_mean_ndcg10_by_epoch")
            layers = (a.get("adapter") or {}).get("layers", [])
            chosen = [tuple(h) for h in (rec.get("selection") or {}).get("heads", {}).get("heads", [])]
            in_layers = sum(h[0] in layers for h in chosen)
            weights = a.get("head_weights") or [1.0]
            lines.append(f"| {name} | {rec['fold']} | {rec['train_queries']} | {rec['selection_fit_seconds']} | "
                         f"{rec['alignment_fit_seconds']} | {a.get('cache_seconds')} | {a.get('train_seconds')} | "
                         f"{rec.get(SELECTED + ' scoring seconds per list', '-')} / "
                         f"{rec.get(ALIGNED + ' scoring seconds per list', '-')} | "
                         f"{layers} ({in_layers} of {len(chosen)}) | {min(weights):.3f}-{max(weights):.3f} | "
                         f"{rec.get('selection training nDCG@10 (in-sample, from the profile)', '-')} | "
                         f"{curve} | {a.get('best_epoch')} | {fold_q} |")
    lines += ["", "## Verdict", "", *verdict(tables, missing)]
    for tag in args.compare_tags:
        other = argparse.Namespace(**{**vars(args), "tag": tag})
        lines += ["", f"## Alignment variant `{tag}` (same folds' selection; stored runs of that variant)", "",
                  "| collection | system | queries | folds | nDCG@10 | delta | p | +/- | p(align) | gap (pp) |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for name in args.collections:
            rows, absent, recs = collection_table(other, name)
            for r in rows:
                lines.append(f"| {name} | {r['system']} | {r['queries']} | {r['folds']} | {r['ndcg10']:.4f} | "
                             f"{r['delta']:+.4f} | {fmt(r['p_vs_first'])} | {r['better']}/{r['worse']} | "
                             f"{fmt(r['p_align_vs_selection'])} | {r['gap_pp']:.1f} |")
            if absent:
                lines.append(f"| {name} | variant not run on folds {', '.join(map(str, absent))} | | | | | | | | |")
            if recs:  # the default alignment on the same folds, for a paired comparison
                base, _, _ = collection_table(args, name, only={rec["fold"] for rec in recs})
                for r in base:
                    if r["system"].startswith(ALIGNED):
                        lines.append(f"| {name} | {r['system']} (default settings, same folds) | {r['queries']} | "
                                     f"{r['folds']} | {r['ndcg10']:.4f} | {r['delta']:+.4f} | {fmt(r['p_vs_first'])} | "
                                     f"{r['better']}/{r['worse']} | {fmt(r['p_align_vs_selection'])} | "
                                     f"{r['gap_pp']:.1f} |")
            for rec in recs:
                a = rec.get("alignment") or {}
                weights = a.get("head_weights") or [1.0]
                lines.append(f"| {name} | fold {rec['fold']}: inner out-of-fold nDCG@10 by epoch "
                             f"{a.get('cv_mean_ndcg10_by_epoch')}, epochs kept {a.get('best_epoch')}, head weights "
                             f"{min(weights):.3f}-{max(weights):.3f}, held-out sel / aligned "
                             f"{held_out_fold_ndcg(other, name, rec['fold'])} | | | | | | | | |")
    (stem.parent / f"{stem.name}.md").write_text("\n".join(lines) + "\n")
    log(f"report written to {stem.with_suffix('.md')}")


def align_description(overrides: dict) -> str:
    from pyterrier_headrank.training.settings import FitSettings

    f = FitSettings().replace(**overrides)
    layers = "the deepest layer" if f.adapt_layers == 1 else (
        "every layer" if f.adapt_layers <= 0 else f"the {f.adapt_layers} deepest layers")
    return (f"LoRA r={f.rank} alpha={f.alpha:g} on {'/'.join(f.targets)} of {layers} holding selected heads, head "
            f"weights learned: {f.learn_weights}; pairwise logistic loss over adjacent grades + {f.hard_negatives} "
            f"hard negatives (at most {f.max_pairs} pairs, beta={f.beta:g}), Omega gamma={f.gamma:g} eta={f.eta:g}; "
            f"AdamW lr={f.lr:g}, weight decay {f.weight_decay:g}; at most {f.epochs} epochs, the number chosen by "
            f"{f.cv_folds}-fold cross-fitting inside the training folds (epoch 0 = no alignment); seed {f.seed}")


def held_out_fold_ndcg(args, name: str, fold: int) -> str:
    import pyterrier as pt

    frame, qrels = candidate_lists(name)
    out = []
    for s in (SELECTED, ALIGNED):
        run = pt.io.read_results(str(run_path(args, name, fold, s)))
        values = per_query_ndcg(run, qrels[qrels.qid.astype(str).isin(set(run.qid.astype(str)))])
        out.append(f"{sum(values.values()) / max(len(values), 1):.4f}")
    return " / ".join(out)


def verdict(tables, missing) -> list:
    lines = []
    for name in dict.fromkeys(r["collection"] for r in tables):
        rows = {r["system"]: r for r in tables if r["collection"] == name}
        for suffix, label in (("", "attention only"), (FUSED, "fused")):
            s, a = rows[SELECTED + suffix], rows[ALIGNED + suffix]
            diff = a["ndcg10"] - s["ndcg10"]
            word = "wins" if diff > 5e-5 else "loses" if diff < -5e-5 else "ties"
            lines.append(f"- {name}, {label}: alignment {word} ({a['ndcg10']:.4f} vs {s['ndcg10']:.4f}, "
                         f"{a['ndcg10'] - s['ndcg10']:+.4f}, p={a['p_align_vs_selection']:.3g}; first stage "
                         f"{rows[FIRST]['ndcg10']:.4f}); selectivity gap {a['gap_pp']:.1f} pp vs {s['gap_pp']:.1f} pp"
                         + (f" (folds {', '.join(map(str, missing[name]))} missing)" if missing[name] else "") + ".")
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--collections", default="dl21-bm25", help="comma-separated; order of work")
    parser.add_argument("--folds", default="0,1,2,3,4", help="comma-separated folds to compute (others: report)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 ran 2-2.5x faster than 2 on the "
                                                                 "shared 2-core machine)")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="an alignment setting of HeadRank.fit (FitSettings) other than its default")
    parser.add_argument("--tag", default=None, help="name of this variant's runs (default: from --set)")
    parser.add_argument("--train-ndcg", action="store_true", help="also score each fold's training lists")
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--note", default="", help="a line for the report's header (e.g. how the runs were made)")
    parser.add_argument("--compare-tags", default="", help="comma-separated variant tags to add to the report")
    args = parser.parse_args(argv)
    args.collections = [c for c in args.collections.split(",") if c]
    args.compare_tags = [t for t in args.compare_tags.split(",") if t]
    unknown = [c for c in args.collections if c not in COLLECTIONS]
    if unknown:
        raise SystemExit(f"unknown collections {unknown}")
    args.overrides = dict((kv.split("=", 1)[0], parse_value(kv.split("=", 1)[1])) for kv in args.set)
    args.tag = args.tag or ("default" if not args.overrides else
                            "_".join(f"{k}{v}" for k, v in sorted(args.overrides.items())))
    quiet_offline_environment()
    import torch
    torch.set_num_threads(args.threads)
    started = datetime.datetime.now().isoformat(timespec="minutes")
    command = "python benchmarks/align_crossfit.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    if not args.report_only:
        folds = [int(f) for f in args.folds.split(",") if f]
        for name in args.collections:
            frame, qrels = candidate_lists(name)
            for fold in folds:
                run_fold(args, name, fold, frame, qrels)
    write_report(args, command, started)


if __name__ == "__main__":
    main()
