#!/usr/bin/env python
"""HeadRank's gain over its first stage against model size, on the same lists for every model.

For each model, from its stored all-head profiles (``head_profiles.py``: reversed prompt order, top-20, 64-token
passages), the systems: the first stage; the **training-free** head set; **selection** (k heads by
entropy-regularised selection, weight 1 each) and **weighted** (every head of the allowed layers, weights from a
pairwise logistic fit, :mod:`pyterrier_headrank.head_weights`), each the best recipe of its method in the
reversed-order search of ``default_fit.py`` (same grid, same 5 folds, same choice rule), attention only and fused
with the first stage at the weight chosen on the pooled out-of-fold scores. Collections, a subset small enough for
the larger models on two CPU cores:

* DL21 with its three first stages (BM25, BM25+RM3, SPLADE++), 53 queries each. These are training lists, so the
  fitted rows are **cross-fitted**: five folds of query ids, each scored by heads fitted without it;
* 100 SciFact *test* queries (a seeded sample, ``scifact-100``), which no fit saw (heads fitted on every training
  list).

nDCG@10 and paired t-tests against the first stage come from ``pt.Experiment`` (Holm over the systems of a model on a
collection); the middle-zone selectivity gap from :func:`pyterrier_headrank.metrics.selectivity`. Alignment (LoRA +
Omega) rows come from ``align_crossfit.py``'s results where that costly run exists, in a table of their own. Cost per
list is the profile pass's own time (a full-depth pass that reads every head: an upper bound on a fitted pass, which
stops at its deepest head).

    .venv/bin/python benchmarks/size_curve.py

Writes ``benchmarks/results/size_curve.md`` / ``.csv`` / ``.png``.
"""
from __future__ import annotations

import argparse
import datetime
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from _common import COLLECTIONS, RESULTS, quiet_offline_environment  # noqa: E402
from default_fit import TRAIN  # noqa: E402

#: model alias -> parameters (for the curve's x axis)
MODELS = {"smollm2-135m": 135e6, "gemma3-270m": 268e6, "qwen2.5-coder-0.5b": 494e6, "qwen2.5-coder-1.5b": 1.54e9}
CURVE = ("dl21-bm25", "dl21-rm3", "dl21-splade", "scifact-100")


SYSTEMS = ("first stage", "training-free", "selection", "selection, fused", "weighted", "weighted, fused")


def model_table(model: str, collections, notes: list, train=None):
    """Every system's per-collection table for ``model`` (None where its training profiles are missing)."""
    import pandas as pd
    from effectiveness import add_first_stage_delta, evaluate

    try:
        runs = model_runs(model, collections, notes, train)
    except FileNotFoundError as err:
        notes.append(f"{model}: not run, a profile is missing ({pathlib.Path(str(err).split(':')[0]).name})")
        return None
    tables = [evaluate(name, per_system) for name, per_system in runs.items()]
    table = add_first_stage_delta(pd.concat(tables, ignore_index=True))
    table.insert(0, "model", model)
    table["parameters"] = MODELS.get(model, float("nan"))
    table["seconds_per_list"] = table.collection.map(lambda n: seconds_per_list(model, n))
    return table


def model_runs(model: str, collections, notes: list, train=None):
    """{collection: {system: run}}: the training-free heads, and for each method (select, weighted) the best recipe
    of the reversed-order search that ``default_fit.py`` runs, cross-fitted where a collection is a training set,
    fitted on every training list elsewhere, attention only and fused at the weight chosen out-of-fold. ``train``:
    the training collections (default: ``default_fit.TRAIN``)."""
    from _profiles import Profile, run_frame, system_scores
    from default_fit import describe, load_training, qrels_of

    from pyterrier_headrank.fusion import fuse_scores
    from pyterrier_headrank.heads import HeadSet

    train = tuple(train or TRAIN)
    data, qrels = load_training(model, 64, ("reversed",), train), qrels_of(train)
    views = {n: data[n]["reversed"] if n in train else Profile.load(model, n, "reversed") for n in collections}
    shape = data[train[0]]["base"].num_layers, data[train[0]]["base"].num_heads
    methods = {m: best_of_method(model, m, data, qrels, views) for m in ("select", "weighted")}
    notes.extend(f"{model}, {m}: {describe(recipe)}, fusion weight {weight:g}"
                 for m, (_, weight, recipe) in methods.items())
    runs = {}
    for name, view in views.items():
        first = view.first_stage_scores()
        scores = {SYSTEMS[0]: first, SYSTEMS[1]: system_scores([view], HeadSet.training_free(*shape))}
        for label, method in (("selection", "select"), ("weighted", "weighted")):
            attention, weight = methods[method][0][name], methods[method][1]
            scores[label] = attention
            scores[f"{label}, fused"] = [fuse_scores(f, a, weight) for f, a in zip(first, attention)]
        runs[name] = {system: run_frame(view, s, system) for system, s in scores.items()}
    return runs


def best_of_method(model, method, data, qrels, views):
    """({collection: scores per list}, fusion weight, recipe) of ``method``'s recipe, chosen as ``default_fit.py``
    chooses."""
    from _profiles import system_scores
    from default_fit import choose, final_fit, fusion_for, out_of_fold, recipe_table

    num_layers = next(iter(data.values()))["base"].num_layers
    candidates, oof = out_of_fold(data, qrels, num_layers, ("reversed",), (method,))
    best = choose(recipe_table(data, qrels, candidates, oof)) - 1
    recipe = candidates[best]
    weight, _ = fusion_for(data, qrels, oof[best])
    heads, bias, _, _ = final_fit(data, recipe)  # on every training list, from the profiles already loaded
    scores = {n: oof[best][n] if n in data else system_scores([v], heads, bias) for n, v in views.items()}
    return scores, weight, recipe


def seconds_per_list(model: str, name: str) -> float:
    """The stored profile pass's seconds per list (NaN when the profile is not on this machine)."""
    import numpy as np
    from head_profiles import profile_path

    path = profile_path(model, name, "reversed", 20, 64)
    if not path.exists():
        return float("nan")
    with np.load(path, allow_pickle=True) as data:
        return float(data["seconds"]) / len(data["qids"])


def summary(table):
    """Per model and system: mean nDCG@10 and mean gain over the collections, significant wins and losses."""
    import pandas as pd
    from effectiveness import significance_counts

    rows = []
    for (model, system), group in table.groupby(["model", "name"], sort=False):
        better, worse = significance_counts(group)
        rows.append({"model": model, "parameters": group.parameters.iloc[0], "system": system,
                     "collections": len(group), "mean_ndcg10": group["nDCG@10"].mean(),
                     "mean_delta": group.delta.mean(), "significantly_better": better, "significantly_worse": worse,
                     "scifact_gap_pp": group[group.collection == "scifact-100"].selectivity_gap_pp.mean(),
                     "seconds_per_list": group.seconds_per_list.mean()})
    return pd.DataFrame(rows)


def alignment_rows():
    """The mean rows of every ``align_crossfit_<model>.csv`` (selection with and without alignment)."""
    import pandas as pd

    frames = []
    for path in sorted(RESULTS.glob("align_crossfit_*.csv")):
        frame = pd.read_csv(path)
        frame = frame[~frame.collection.str.startswith("mean")]
        frame.insert(0, "model", path.stem.removeprefix("align_crossfit_"))
        frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else None


def plot(summ, path, collections=CURVE) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    complete = summ[summ.collections == len(collections)]
    fig, ax = plt.subplots(figsize=(6.4, 4))
    for system, group in complete[complete.system != "first stage"].groupby("system", sort=False):
        group = group.sort_values("parameters")
        ax.plot(group.parameters, group.mean_delta, marker="o", label=system)
    ax.axhline(0, color="grey", linewidth=0.8)
    ax.set_xscale("log")
    models = complete.drop_duplicates("model").sort_values("parameters")
    ax.set_xticks(list(models.parameters), [f"{m}\n{p / 1e6:.0f}M" for m, p in zip(models.model, models.parameters)],
                  fontsize=7)
    ax.minorticks_off()
    ax.set_xlabel("model (parameters, log scale)")
    ax.set_ylabel("mean nDCG@10 gain over the first stage")
    ax.set_title(f"HeadRank vs model size ({', '.join(collections)})", fontsize=9)
    if ax.get_legend_handles_labels()[1]:  # no model complete yet: no lines to name
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def protocol(collections, train) -> str:
    """The report's sentence on what was scored and how the fitted rows were kept out of their own lists."""
    if tuple(collections) == CURVE and tuple(train) == TRAIN:
        return ("collections: DL21 (BM25, BM25+RM3, SPLADE++; 53 queries each; fitted rows cross-fitted, 5 folds of "
                "query ids) and 100 seeded SciFact test queries (no fit saw them).")
    return (f"collections: {', '.join(collections)}; heads fitted on {', '.join(train)} only (a subset, for a model "
            f"whose other profiles are not stored), cross-fitted (5 folds of query ids) where a collection is one of "
            f"them.")


def write_report(table, summ, aligned, notes, path, collections=CURVE, train=TRAIN) -> None:
    from effectiveness import collection_row

    lines = ["# HeadRank's gain over the first stage against model size", "",
             f"Written {datetime.date.today().isoformat()} by `benchmarks/size_curve.py`. Top-20 lists, 64-token "
             f"passages, reversed prompt order; {protocol(collections, train)} p: "
             "paired t-test against the first stage, Holm over a model's systems on a collection. Cost: seconds per "
             "list of the profile pass (every head read, 2 shared CPU cores).", "",
             *([f"- {line}" for line in notes] + [""] if notes else []),
             "## Summary", "", f"![gain against size]({path.with_suffix('.png').name})", "",
             "| model | system | collections | mean nDCG@10 | mean vs first stage | significantly better | "
             "significantly worse | SciFact gap pp | s/list |", "|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r.model} | {r.system} | {r.collections} | {r.mean_ndcg10:.4f} | {r.mean_delta:+.4f} | "
              f"{r.significantly_better} | {r.significantly_worse} | {r.scifact_gap_pp:.1f} | {r.seconds_per_list:.1f} |"
              for r in summ.itertuples()]
    lines += ["", "## Per collection", "", "| model | collection | system | nDCG@10 | vs first stage | p (Holm) | gap pp |",
              "|---|---|---|---|---|---|---|"]
    lines += [collection_row((r.model, COLLECTIONS[r.collection].label), r) for _, r in table.iterrows()]
    if aligned is not None:
        lines += ["", "## Alignment (LoRA + Omega), cross-fitted by `align_crossfit.py`", "",
                  "| model | collection | system | nDCG@10 | vs first stage | p | gap pp |", "|---|---|---|---|---|---|---|"]
        lines += [f"| {r.model} | {r.collection} | {r.system} | {r.ndcg10:.4f} | {r.delta:+.4f} | "
                  f"{'-' if r.p_vs_first != r.p_vs_first else f'{r.p_vs_first:.3g}'} | {r.gap_pp:.1f} |"
                  for r in aligned.itertuples()]
    missing = [m for m in MODELS if m not in set(table.model)]
    if missing:
        lines += ["", f"Not in the curve: {', '.join(missing)} (see the notes above)."]
    path.write_text("\n".join(lines) + "\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--collections", nargs="+", default=list(CURVE))
    parser.add_argument("--train", nargs="+", default=list(TRAIN), help="training collections of the fitted rows")
    parser.add_argument("--stem", default="size_curve", help="name of the results (benchmarks/results/<stem>.*)")
    args = parser.parse_args(argv)
    quiet_offline_environment()
    import pandas as pd

    notes = []
    tables = [t for t in (model_table(m, args.collections, notes, args.train) for m in args.models) if t is not None]
    table = pd.concat(tables, ignore_index=True)
    summ = summary(table)
    table.to_csv(RESULTS / f"{args.stem}.csv", index=False)
    plot(summ, RESULTS / f"{args.stem}.png", args.collections)
    write_report(table, summ, alignment_rows(), notes, RESULTS / f"{args.stem}.md", args.collections, args.train)
    print((RESULTS / f"{args.stem}.md").read_text())


if __name__ == "__main__":
    main()
