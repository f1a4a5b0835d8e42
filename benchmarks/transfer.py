#!/usr/bin/env python
"""Does a fit carry over? Fit on X, test on Y, over the collections in the shared folder.

Each row fits the shipped default's recipe (order, depth cap, ``k``, ``lam``, slot correction; see
``default_fit.py``) on one training source and scores every test collection with it, attention only (no fusion),
nDCG@10 on top-20 lists from the stored profiles (``head_profiles.py``). Where source and target share DL21 query
ids (DL21's three first stages hold the same queries) the score is cross-fitted: five folds of query ids, each
scored by a fit that never saw them. "DL21 BM25 lists" to "DL21 (SPLADE++)" is the first-stage transfer: heads fitted
on BM25 candidates, used on SPLADE++ candidates of other queries.

    .venv/bin/python benchmarks/transfer.py --model smollm2-135m

Writes ``benchmarks/results/transfer.md`` / ``.csv``.
"""
from __future__ import annotations

import argparse
import datetime
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from _common import COLLECTIONS, RESULTS, quiet_offline_environment  # noqa: E402

SOURCES = {"DL21 BM25 lists": ("dl21-bm25",), "DL21, three first stages": ("dl21-bm25", "dl21-rm3", "dl21-splade"),
           "SciFact train": ("scifact-train",),
           "DL21 (three) + SciFact train (the shipped data)": ("dl21-bm25", "dl21-rm3", "dl21-splade",
                                                               "scifact-train")}
TARGETS = ("scifact", "dl21-bm25", "dl21-splade", "cacm", "cisi", "vaswani", "cranfield")
DL21 = {"dl21-bm25", "dl21-rm3", "dl21-splade"}


def transfer_score(model, recipe, sources, target, qrels):
    """nDCG@10 on ``target`` of the recipe fitted on ``sources`` (cross-fitted over shared DL21 query ids)."""
    from _profiles import Profile
    from default_fit import recipe_scores

    from pyterrier_headrank.metrics import ndcg10

    view = Profile.load(model, target, recipe["order"])
    if recipe["max_layer"] > view.max_layer:
        return float("nan")
    scores = recipe_scores(model, recipe, sources, [view], cross=bool(target in DL21 and DL21 & set(sources)))
    return ndcg10(view.lists(scores), qrels)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--targets", nargs="+", default=list(TARGETS))
    args = parser.parse_args(argv)
    quiet_offline_environment()
    import pandas as pd
    from _profiles import Profile

    from pyterrier_headrank.data import get_collection
    from pyterrier_headrank.folder import read_fit
    from pyterrier_headrank.metrics import ndcg10
    from pyterrier_headrank.registry import default_fit_path

    recipe = read_fit(default_fit_path(args.model)).summary["recipe"]
    targets = [t for t in args.targets if _has_profile(args.model, t, recipe["order"])]
    qrels = {t: get_collection(COLLECTIONS[t].shared, source="shared").get_qrels() for t in targets}
    rows = []
    first = {}
    for t in targets:
        view = Profile.load(args.model, t, recipe["order"])
        first[t] = ndcg10(view.lists(view.first_stage_scores()), qrels[t])
    rows.append({"fit on": "(first stage, no reranking)", **first})
    for label, sources in SOURCES.items():
        rows.append({"fit on": label, **{t: transfer_score(args.model, recipe, sources, t, qrels[t])
                                         for t in targets}})
        print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    table.to_csv(RESULTS / "transfer.csv", index=False)
    write_report(args, table, targets, recipe, RESULTS / "transfer.md")
    print((RESULTS / "transfer.md").read_text())


def _has_profile(model, target, order) -> bool:
    from head_profiles import profile_path
    return profile_path(model, target, order, 20, 64).exists()


def write_report(args, table, targets, recipe, path):
    from default_fit import describe
    lines = ["# Transfer: fit on X, test on Y", "",
             f"Written {datetime.date.today().isoformat()} by `benchmarks/transfer.py --model {args.model}`. Recipe: "
             f"{describe(recipe)} (the shipped default's), attention only, nDCG@10, top-20 lists. Bold: above the "
             f"first stage. DL21 to DL21 is cross-fitted by query id.", "",
             "| fit on | " + " | ".join(COLLECTIONS[t].label for t in targets) + " |",
             "|---|" + "---|" * len(targets)]
    base = table.iloc[0]
    for _, row in table.iterrows():
        cells = [("-" if row[t] != row[t] else (f"**{row[t]:.4f}**" if row.name and row[t] > base[t]
                                                else f"{row[t]:.4f}")) for t in targets]
        lines.append(f"| {row['fit on']} | " + " | ".join(cells) + " |")
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
