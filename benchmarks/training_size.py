#!/usr/bin/env python
"""Do more training queries help the learned head weights? The shipped recipe fitted on its training lists with 100
SciFact train queries and with 300 (as shipped since this comparison), scored on every collection.

The recipe is the model's registered fit's (``default_fit.py`` chose it; for the 0.5B: every head of layers 0-15,
weights from a pairwise logistic fit, reversed order, fused with the first stage at the fit's weight). Only the training
set changes: DL21 with its three first stages plus a seeded sample of 100 or 300 SciFact train queries (the 300 hold
the 100). Scores come from the stored all-head profiles (``head_profiles.py``); DL21 is cross-fitted (5 folds of
query ids, as in ``effectiveness.py``), the other collections are held out. ``pt.Experiment`` gives nDCG@10 and
paired t-tests against the first stage (Holm over the systems of a collection).

    .venv/bin/python benchmarks/head_profiles.py --model qwen2.5-coder-0.5b --collections scifact-train-300 \
        --orders reversed --max-layer 18
    .venv/bin/python benchmarks/training_size.py --model qwen2.5-coder-0.5b

Writes ``benchmarks/results/training_size_<model>.md`` / ``.csv``.
"""
from __future__ import annotations

import argparse
import datetime
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from _common import COLLECTIONS, RESULTS, quiet_offline_environment  # noqa: E402

#: label -> training collections; the second is what the shipped fit is trained on
TRAIN_SETS = {"100 SciFact train": ("dl21-bm25", "dl21-rm3", "dl21-splade", "scifact-train"),
              "300 SciFact train": ("dl21-bm25", "dl21-rm3", "dl21-splade", "scifact-train-300")}
TARGETS = ("scifact", "dl21-bm25", "dl21-rm3", "dl21-splade", "cranfield", "cacm", "cisi", "vaswani")


def collection_runs(model: str, name: str, recipe: dict, weight: float) -> dict:
    """{system: run} on ``name``: the first stage, then per training set the recipe's attention-only and fused runs
    (cross-fitted where ``name`` is one of the training collections)."""
    from _profiles import Profile, run_frame
    from default_fit import recipe_scores
    from effectiveness import FIRST

    from pyterrier_headrank.fusion import fuse_scores

    view = Profile.load(model, name, recipe["order"])
    runs = {FIRST: run_frame(view, view.first_stage_scores(), FIRST)}
    for label, sources in TRAIN_SETS.items():
        attention = recipe_scores(model, recipe, sources, [view], cross=name in sources)
        fused = [fuse_scores(first, a, weight) for first, a in zip(view.first_stage_scores(), attention)]
        runs[f"{label}, attention only"] = run_frame(view, attention, f"{label}, attention only")
        runs[f"{label}, fused"] = run_frame(view, fused, f"{label}, fused")
    return runs


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="qwen2.5-coder-0.5b")
    parser.add_argument("--collections", nargs="+", default=list(TARGETS), choices=TARGETS)
    args = parser.parse_args(argv)
    quiet_offline_environment()
    import pandas as pd
    from effectiveness import add_first_stage_delta, evaluate, shipped, summary_rows

    fit = shipped(args.model)
    recipe, weight = fit.summary["recipe"], fit.settings["fuse"] or 0.0
    tables = [evaluate(n, collection_runs(args.model, n, recipe, weight)) for n in args.collections]
    table = add_first_stage_delta(pd.concat(tables, ignore_index=True))
    stem = f"training_size_{args.model}"
    table.to_csv(RESULTS / f"{stem}.csv", index=False)
    write_report(args, table, summary_rows(table), recipe, weight, RESULTS / f"{stem}.md")
    print((RESULTS / f"{stem}.md").read_text())


def write_report(args, table, summary, recipe, weight, path):
    from default_fit import describe
    from effectiveness import collection_row

    lines = [f"# More training queries for the learned head weights ({args.model})", "",
             f"Written {datetime.date.today().isoformat()} by `benchmarks/training_size.py --model {args.model}`. "
             f"Recipe: {describe(recipe)}, fused at {weight:g}. Training sets: "
             + "; ".join(f"{label}: {', '.join(s)}" for label, s in TRAIN_SETS.items())
             + ". DL21 cross-fitted (5 folds of query ids); other collections held out. Top 20, 64-token passages; "
             "p: paired t-test against the first stage, Holm over the systems of a collection.", "",
             "## Summary over collections", "",
             "| system | collections | mean nDCG@10 | mean vs first stage | significantly worse | significantly better |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r.system} | {r.collections} | {r.mean_ndcg10:.4f} | {r.mean_delta:+.4f} | "
              f"{r.significantly_worse} | {r.significantly_better} |" for r in summary.itertuples()]
    lines += ["", "## Per collection", "", "| collection | system | nDCG@10 | vs first stage | p (Holm) | gap pp |",
              "|---|---|---|---|---|---|"]
    lines += [collection_row([COLLECTIONS[row.collection].label], row) for _, row in table.iterrows()]
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
