#!/usr/bin/env python
"""Does the paper's alignment improve the shipped weighted heads? Cross-fitted over the pooled training lists, each
list's frozen pass cached once for all folds.

The protocol of ``default_fit.py`` and ``weight_levers.py``: the training collections (DL21 with three first stages,
100 SciFact train queries; ``--train`` to change), top-20 lists, 64-token passages, reversed prompt order, five folds
by ``crc32(qid) % 5`` (a DL21 query is in the same fold whichever first stage produced its list). For each fold:

* **weighted** (the shipped kind, no alignment): every head of layers ``0..max_layer`` weighted by the pairwise
  logistic fit on the other four folds' stored profiles (``default_fit.fitted_heads``, the model's recipe from
  ``weight_levers.RECIPES``), scored on the held-out fold from the same profiles;
* **weighted + alignment**: those heads and weights as the start, then ``HeadRank.fit``'s alignment step
  (:func:`pyterrier_headrank.training.epochs.align_cached`: LoRA on q/k of the deepest layer, head weights trained
  too, pairwise loss over adjacent grades + hard negatives, Omega; epochs chosen by 3-fold cross-fitting inside the
  training folds; ``FitSettings`` defaults unless ``--set name=value``), scored on the held-out fold by replay.

Alignment replays only the adapted layer, on the hidden states that the frozen layers below give; those do not depend
on the fold, so each list's frozen pass runs once (:meth:`AttentionReplay.capture`) and is stored under
``~/.cache/pyterrier-headrank/align_pooled/<model>/``; a later run reuses it. Before training, the replayed scores of
every list under unit weights are checked against the stored profile (the same pass, so they must agree).

Rows: nDCG@10 out of fold per collection, attention only and fused with the first stage at the shipped fit's weight;
paired t-tests against the first stage and between the two (scipy, uncorrected); middle-zone selectivity gap.

    .venv/bin/python benchmarks/align_pooled.py --model qwen2.5-coder-0.5b

Writes ``benchmarks/results/align_pooled_<model>[_<tag>].md`` / ``.csv`` and the per-fold record ``.json``.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from _common import RESULTS, candidate_lists, grouped, quiet_offline_environment  # noqa: E402

CACHE = pathlib.Path(os.environ.get("HEADRANK_CACHE", pathlib.Path.home() / ".cache" / "pyterrier-headrank")) \
    / "align_pooled"
FIRST, WEIGHTED, ALIGNED, FUSED = "first stage", "weighted", "weighted + alignment", " fused"


def log(message: str) -> None:
    print(f"[{datetime.datetime.now().strftime('%H:%M:%S')}] {message}", flush=True)


def make_replay(model: str, max_layer: int, settings):
    """(reranker, replay): the model with LoRA on layer ``max_layer`` and a replay of every head of layers
    ``0..max_layer`` (unit weights until a fold sets them)."""
    from pyterrier_headrank import HeadRank
    from pyterrier_headrank.heads import HeadSet
    from pyterrier_headrank.lora import AdapterConfig, attach_lora
    from pyterrier_headrank.training.replay import AttentionReplay

    reranker = HeadRank(model, heads=[(0, 0)], order="reversed", max_passage_tokens=64)
    reader = reranker.engine().reader
    heads = HeadSet(tuple((l, h) for l in range(max_layer + 1) for h in range(reader.num_heads)))
    config = AdapterConfig((max_layer,), settings.rank, settings.alpha, tuple(settings.targets))
    adapted = attach_lora(reader.model, config, settings.seed)
    replay = AttentionReplay(adapted, heads, max_layer, reranker.calibrate, reader.pad_token_id,
                             settings.learn_weights)
    return reranker, replay


def captured(reranker, replay, model: str, name: str, max_layer: int):
    """Every list of ``name`` cached for replay (prompt order; qids prefixed ``name:``), from disk where stored."""
    import numpy as np
    import torch

    path = CACHE / model / f"{name}.layer{max_layer}.top20.p64.pt"
    if path.exists():
        return torch.load(path, weights_only=False)
    frame, qrels = candidate_lists(name, 20)
    grades = {(q, d): int(l) for q, d, l in qrels[["qid", "docno", "label"]].itertuples(index=False)}
    items, started = [], time.time()
    for i, (qid, query, ids, texts, _) in enumerate(grouped(frame)):
        plan, windows = reranker.windows(query, texts, reverse=True)
        kept = list(plan[0])[::-1]
        labels = np.array([grades.get((qid, ids[j]), 0) for j in kept], dtype=np.float64)
        items.append(replay.capture(windows[0], f"{name}:{qid}", [ids[j] for j in kept], labels))
        if (i + 1) % 25 == 0:
            log(f"  {name}: {i + 1} lists cached, {time.time() - started:.0f} s")
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(items, path)
    return items


def check_against_profile(replay, items, profile, used: int) -> float:
    """Largest relative difference between the replayed unit-weight scores and the profile's summed masses."""
    import numpy as np
    import torch

    worst = 0.0
    with torch.no_grad():
        replay.weights.fill_(1.0)
        for item, masses, n in zip(items, profile.calibrated, profile.lengths()):
            expected = masses[:used, :n].astype(np.float64).sum(0)[::-1]  # prompt order
            got = replay.scores(item).double().cpu().numpy()
            worst = max(worst, float(np.abs(got - expected).max() / (np.abs(expected).max() + 1e-12)))
    return worst


def pooled_qrels(names):
    """The training collections' qrels with qids prefixed ``name:`` (the cached lists' qids)."""
    from default_fit import prefixed_qrels, qrels_of

    return prefixed_qrels(qrels_of(names))


def fold_weights(model: str, recipe: dict, names, fold: int):
    """The recipe's weighted heads fitted on every training list outside ``fold`` (from the stored profiles)."""
    from default_fit import fitted_heads

    heads, _ = fitted_heads(model, recipe, names, held_fold=fold)
    return heads


def align_fold(replay, items, qrels, weights, initial_lora, settings, fold: int):
    """Align from ``weights`` on the lists outside ``fold``; (held-out scores by qid, what training did)."""
    import torch
    from default_fit import fold_of

    from pyterrier_headrank.training.epochs import align_cached
    from pyterrier_headrank.training.replay import prepare

    replay.load_state({"lora": initial_lora, "weights": torch.tensor(weights, dtype=torch.float32)})
    train = [it for it in items if fold_of(it.qid.split(":", 1)[1]) != fold]
    held = [it for it in items if fold_of(it.qid.split(":", 1)[1]) == fold]
    for item in items:
        item.initial = None
    prepare(replay, train)
    started = time.time()
    result, info = align_cached(replay, train, qrels, settings.align_settings(), settings.cv_folds)
    with torch.no_grad():
        scores = {it.qid: (it.docnos, replay.scores(it).double().cpu().numpy()) for it in held}
    record = {"fold": fold, "train_lists": len(train), "held_lists": len(held), **info,
              "epochs_kept": result.best_epoch, "steps": result.steps, "seconds": round(time.time() - started, 1),
              "history": result.history}
    return scores, record


def profile_scores(model: str, names, fold_heads: dict):
    """Out-of-fold scores of the weighted heads of each fold (``fold_heads``) from the stored profiles:
    {name:qid: (docnos, scores)}, and the first stage's, in first-stage order."""
    from _profiles import Profile
    from default_fit import fold_of

    views = {name: Profile.load(model, name, "reversed") for name in names}
    weighted, first = {}, {}
    for fold, heads in fold_heads.items():
        for name, view in views.items():
            for qid, docnos, n, scores, base in zip(view.qids, view.docnos, view.lengths(), view.attention(heads),
                                                    view.first_stage_scores()):
                if fold_of(qid) == fold:
                    weighted[f"{name}:{qid}"] = (list(docnos[:n]), scores)
                    first[f"{name}:{qid}"] = (list(docnos[:n]), base)
    return first, weighted


def as_frame(scores: dict, name: str):
    """A PyTerrier result frame of ``{qid: (docnos, scores)}`` (qids keep their ``collection:`` prefix)."""
    import pandas as pd

    from pyterrier_headrank.frames import add_ranks

    rows = [(q, d, float(v)) for q, (docnos, values) in scores.items() for d, v in zip(docnos, values)]
    return add_ranks(pd.DataFrame(rows, columns=["qid", "docno", "score"])).assign(name=name)


def fused(first: dict, attention: dict, weight: float) -> dict:
    """``attention`` fused with ``first`` (both ``{qid: (docnos, scores)}``) at ``weight``, in ``first``'s order."""
    import numpy as np

    from pyterrier_headrank.fusion import fuse_scores

    out = {}
    for qid, (docnos, base) in first.items():
        by_docno = dict(zip(*attention[qid]))
        out[qid] = (docnos, fuse_scores(np.asarray(base), np.array([by_docno[d] for d in docnos]), weight))
    return out


def collection_rows(name: str, systems: dict, qrels):
    """One row per system on collection ``name``: nDCG@10, vs the first stage (p), vs weighted (p), gap."""
    import ir_measures
    import numpy as np
    from scipy.stats import ttest_rel

    from pyterrier_headrank.metrics import selectivity

    judged = qrels[qrels.qid.str.startswith(f"{name}:")]
    ir_qrels = judged.rename(columns={"qid": "query_id", "docno": "doc_id", "label": "relevance"})
    frames = {s: as_frame({q: v for q, v in runs.items() if q.startswith(f"{name}:")}, s) for s, runs in systems.items()}
    per_query = {}
    for system, frame in frames.items():
        run = frame.rename(columns={"qid": "query_id", "docno": "doc_id"})[["query_id", "doc_id", "score"]]
        values = {m.query_id: m.value for m in ir_measures.iter_calc([ir_measures.nDCG @ 10], ir_qrels, run)}
        per_query[system] = np.array([values.get(q, 0.0) for q in sorted(frames[FIRST].qid.unique())])
    rows = []
    for system, values in per_query.items():
        partner = WEIGHTED + (FUSED if system.endswith(FUSED) else "")
        rows.append({"collection": name, "system": system, "queries": len(values), "ndcg10": values.mean(),
                     "delta": values.mean() - per_query[FIRST].mean(),
                     "p": ttest_rel(values, per_query[FIRST]).pvalue if system != FIRST else np.nan,
                     "p_vs_weighted": (ttest_rel(values, per_query[partner]).pvalue
                                       if system.startswith(ALIGNED) else np.nan),
                     "gap_pp": selectivity(frames[system], frames[FIRST], judged).gap_pp})
    return rows


def run_folds(args, settings, recipe, fold_heads: dict, out_dir):
    """Every fold's aligned held-out scores ({qid: (docnos, scores)}) and records, resumed from ``out_dir``; each
    fold starts from its weighted heads in ``fold_heads``."""
    import torch
    from _profiles import Profile
    from default_fit import FOLDS

    from pyterrier_headrank.lora import lora_state

    done = {f: json.loads((out_dir / f"fold{f}.json").read_text()) for f in range(FOLDS)
            if (out_dir / f"fold{f}.json").exists()}
    if len(done) < FOLDS:
        torch.set_num_threads(args.threads)
        reranker, replay = make_replay(args.model, recipe["max_layer"], settings)
        items = []
        for name in args.train:
            cached = captured(reranker, replay, args.model, name, recipe["max_layer"])
            profile = Profile.load(args.model, name, "reversed")
            assert [it.qid for it in cached] == [f"{name}:{q}" for q in profile.qids], name
            used = (recipe["max_layer"] + 1) * profile.num_heads
            log(f"{name}: {len(cached)} lists; replay vs profile, largest relative difference "
                f"{check_against_profile(replay, cached, profile, used):.2e}")
            items += cached
        initial_lora, qrels = lora_state(replay.model), pooled_qrels(args.train)
        for fold in sorted(set(range(FOLDS)) - set(done)):
            scores, record = align_fold(replay, items, qrels, fold_heads[fold].weights, initial_lora, settings, fold)
            record["scores"] = {q: [list(d), [float(x) for x in s]] for q, (d, s) in scores.items()}
            (out_dir / f"fold{fold}.json").write_text(json.dumps(record))
            done[fold] = record
            log(f"fold {fold}: epochs kept {record['epochs_kept']}, inner curve "
                f"{record.get('cv_mean_ndcg10_by_epoch')}, {record['seconds']} s")
    aligned = {q: (d, s) for f in sorted(done) for q, (d, s) in done[f]["scores"].items()}
    return aligned, [{k: v for k, v in done[f].items() if k != "scores"} for f in sorted(done)]


def main(argv=None):
    from default_fit import FOLDS, TRAIN
    from weight_levers import RECIPES

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="qwen2.5-coder-0.5b")
    parser.add_argument("--train", nargs="+", default=list(TRAIN))
    parser.add_argument("--set", nargs="*", default=[], metavar="NAME=VALUE",
                        help="FitSettings overrides for alignment, e.g. lr=0.01 epochs=6")
    parser.add_argument("--tag", default=None, help="name of this variant's results (default: from --set)")
    parser.add_argument("--fuse", type=float, default=None, help="fusion weight (default: the shipped fit's)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    quiet_offline_environment()
    from pyterrier_headrank.training.settings import FitSettings

    overrides = {k: type(getattr(FitSettings(), k))(v) for k, v in (s.split("=", 1) for s in args.set)}
    settings = FitSettings(verbose=False).replace(**overrides)
    max_layer, c = RECIPES[args.model]
    recipe = {"order": "reversed", "method": "weighted", "max_layer": max_layer, "c": c, "slot": False}
    tag = args.tag or "_".join(f"{k}{v}" for k, v in overrides.items())
    stem = f"align_pooled_{args.model}" + (f"_{tag}" if tag else "")
    out_dir = RESULTS / "runs" / "align_pooled" / args.model / (tag or "default")
    out_dir.mkdir(parents=True, exist_ok=True)
    fold_heads = {fold: fold_weights(args.model, recipe, args.train, fold) for fold in range(FOLDS)}
    aligned, records = run_folds(args, settings, recipe, fold_heads, out_dir)
    weight = args.fuse if args.fuse is not None else shipped_fusion(args.model)
    first, weighted = profile_scores(args.model, args.train, fold_heads)
    systems = {FIRST: first, WEIGHTED: weighted, ALIGNED: aligned,
               WEIGHTED + FUSED: fused(first, weighted, weight), ALIGNED + FUSED: fused(first, aligned, weight)}
    table = summary_table(args.train, systems, pooled_qrels(args.train))
    table.to_csv(RESULTS / f"{stem}.csv", index=False)
    (RESULTS / f"{stem}.json").write_text(json.dumps({"settings": settings.to_dict(), "recipe": recipe,
                                                      "fusion_weight": weight, "folds": records}, indent=1))
    write_report(RESULTS / f"{stem}.md", args, argv, table, records, settings, recipe, weight)
    print((RESULTS / f"{stem}.md").read_text())


def shipped_fusion(model: str) -> float:
    """The fusion weight of the model's registered default fit."""
    from pyterrier_headrank.registry import default_fit_path

    return float(json.loads((default_fit_path(model) / "headrank.json").read_text())["settings"]["fuse"])


def summary_table(names, systems, qrels):
    """Per-collection rows of every system, then their mean over the collections."""
    import pandas as pd

    table = pd.DataFrame([row for name in names for row in collection_rows(name, systems, qrels)])
    mean = table.groupby("system", sort=False)[["ndcg10", "delta", "gap_pp"]].mean().reset_index()
    return pd.concat([table, mean.assign(collection="mean")], ignore_index=True)


def write_report(path, args, argv, table, records, settings, recipe, weight):
    """The markdown report: the table, the verdict per collection, and what each fold's training did."""
    import shlex

    command = "python benchmarks/align_pooled.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    lines = [f"# Alignment on the weighted heads, cross-fitted over the pooled training lists ({args.model})", "",
             f"Command: `{command}`  ",
             f"Written {datetime.datetime.now().isoformat(timespec='minutes')}; 2 CPU cores; protocol in the "
             f"docstring of `benchmarks/align_pooled.py`.", "",
             f"Weighted heads: every head of layers 0-{recipe['max_layer']}, c = {recipe['c']:g} (fitted per fold on "
             f"the other four folds). Alignment: LoRA r={settings.rank} alpha={settings.alpha:g} on "
             f"{'/'.join(settings.targets)} of layer {recipe['max_layer']}, head weights trained: "
             f"{settings.learn_weights}; lr={settings.lr:g}, at most {settings.epochs} epochs chosen by "
             f"{settings.cv_folds}-fold cross-fitting inside the training folds (0 = no alignment), beta="
             f"{settings.beta:g}, gamma={settings.gamma:g}, eta={settings.eta:g}, {settings.max_pairs} pairs, "
             f"{settings.hard_negatives} hard negatives. Fused: first stage z-score fused at {weight:g}. p: paired "
             f"t-test against the first stage; p(align): against the same system without alignment; gap: middle-zone "
             f"selectivity gap (pp).", "",
             "| collection | system | queries | nDCG@10 | vs first stage | p | p(align) | gap pp |",
             "|---|---|---|---|---|---|---|---|"]
    def cell(value) -> str:
        return "-" if value != value else f"{value:.3g}"

    for row in table.itertuples():
        queries = "" if row.collection == "mean" else int(row.queries)
        lines.append(f"| {row.collection} | {row.system} | {queries} | {row.ndcg10:.4f} | {row.delta:+.4f} | "
                     f"{cell(row.p) if row.collection != 'mean' else ''} | "
                     f"{cell(row.p_vs_weighted) if row.collection != 'mean' else ''} | {row.gap_pp:.1f} |")
    lines += ["", "## Verdict", ""] + verdict(table)
    lines += ["", "## Per fold", "", "| fold | train lists | held-out lists | inner out-of-fold nDCG@10 by epoch "
              "(0 = no alignment) | epochs kept | seconds |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['fold']} | {r['train_lists']} | {r['held_lists']} | {r.get('cv_mean_ndcg10_by_epoch')} | "
              f"{r['epochs_kept']} | {r['seconds']} |" for r in records]
    path.write_text("\n".join(lines) + "\n")


def verdict(table) -> list:
    """Alignment against the weighted heads alone, attention only and fused: mean change and significant changes."""
    by = table.set_index(["collection", "system"]).ndcg10
    lines = []
    for suffix, label in (("", "attention only"), (FUSED, "fused")):
        aligned, alone = ALIGNED + suffix, WEIGHTED + suffix
        rows = table[(table.system == aligned) & (table.collection != "mean") & (table.p_vs_weighted < 0.05)]
        better = [r.collection for r in rows.itertuples() if r.ndcg10 > by[(r.collection, alone)]]
        worse = [r.collection for r in rows.itertuples() if r.ndcg10 < by[(r.collection, alone)]]
        lines.append(f"- {label}: alignment {by[('mean', aligned)] - by[('mean', alone)]:+.4f} on average "
                     f"({by[('mean', aligned)]:.4f} against {by[('mean', alone)]:.4f}); significantly better "
                     f"(p(align) < 0.05) on {', '.join(better) or 'none'}, significantly worse on "
                     f"{', '.join(worse) or 'none'}.")
    return lines


if __name__ == "__main__":
    main()
