#!/usr/bin/env python
"""Choose the training-free head set (and prompt order) by measurement, on every model and collection profiled.

Candidates are bands of layers given as fractions of the depth (every head of the layers from ``start`` to
``stop``), so that the winner applies to any model: early, middle, late, the lower half, the middle half, and all
heads (ICR's heads, without its token filter). Each is scored on the stored all-head profiles (``head_profiles.py``)
of the real small models, top-20 BM25 lists, in each prompt order profiled. No qrels choose anything but the band.

    .venv/bin/python benchmarks/training_free.py --models smollm2-135m gemma-3-270m-q4_k_m \
        --collections dl21-bm25 dl21-splade scifact-train cacm vaswani

Writes ``benchmarks/results/training_free.md`` / ``.csv``.
"""
from __future__ import annotations

import argparse
import datetime
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from _common import COLLECTIONS, RESULTS, quiet_offline_environment  # noqa: E402

BANDS = {"early (0-1/4)": (0.0, 0.25), "middle (1/4-1/2)": (0.25, 0.5), "upper middle (1/2-3/4)": (0.5, 0.75),
         "late (3/4-1)": (0.75, 1.0), "lower half (0-1/2)": (0.0, 0.5), "middle half (1/4-3/4)": (0.25, 0.75),
         "all heads (0-1)": (0.0, 1.0)}
ORDERS = ("first-stage", "reversed", "averaged")


def band_heads(profile, start: float, stop: float):
    from pyterrier_headrank.heads import HeadSet
    return HeadSet.middle_layers(profile.num_layers, profile.num_heads, start, stop)


def available(model: str, name: str):
    """{order: [Profile, ...]} for the orders profiled (averaged when both are)."""
    from _profiles import Profile
    found = {}
    for order in ("first-stage", "reversed"):
        try:
            found[order] = [Profile.load(model, name, order)]
        except FileNotFoundError:
            pass
    if len(found) == 2:
        found["averaged"] = found["first-stage"] + found["reversed"]
    return found


def measure(models, names):
    import pandas as pd
    from _profiles import system_scores

    from pyterrier_headrank.data import get_collection
    from pyterrier_headrank.metrics import ndcg10

    rows = []
    for name in names:
        qrels = get_collection(COLLECTIONS[name].shared, source="shared").get_qrels()
        for model in models:
            views = available(model, name)
            if not views:
                print(f"  no profile of {model} on {name}: skipped", flush=True)
                continue
            any_view = next(iter(views.values()))[0]
            rows.append({"model": model, "collection": name, "order": "-", "band": "first stage (BM25)",
                         "ndcg10": ndcg10(any_view.lists(any_view.first_stage_scores()), qrels)})
            for order, profiles in views.items():
                for band, (start, stop) in BANDS.items():
                    heads = band_heads(profiles[0], start, stop)
                    if heads.deepest_layer > min(p.max_layer for p in profiles):
                        continue
                    scores = system_scores(profiles, heads)
                    rows.append({"model": model, "collection": name, "order": order, "band": band,
                                 "ndcg10": ndcg10(profiles[0].lists(scores), qrels)})
    return pd.DataFrame(rows)


def choose(table):
    """Mean nDCG@10 of each (order, band) over the (model, collection) pairs measured in every order; the best."""
    systems = table[table.order != "-"]
    orders = systems.groupby(["model", "collection"])["order"].nunique()
    full = orders[orders == orders.max()].index
    keyed = systems.set_index(["model", "collection"])
    common = keyed[keyed.index.isin(full)].reset_index()
    summary = common.groupby(["order", "band"])["ndcg10"].mean().rename("mean").reset_index()
    first = table[table.order == "-"].set_index(["model", "collection"])["ndcg10"]
    summary["vs_first_stage"] = summary["mean"] - first[first.index.isin(full)].mean()
    summary = summary.sort_values("mean", ascending=False).reset_index(drop=True)
    return summary, len(full)


def write_report(table, summary, pairs, path):
    wide = table.pivot_table(index=["order", "band"], columns=["model", "collection"], values="ndcg10")
    best = summary.iloc[0]
    lines = ["# The training-free head set, chosen by measurement", "",
             f"Written {datetime.date.today().isoformat()} by `benchmarks/training_free.py`. Top-20 first-stage "
             "lists, 64-token passages, calibrated attention of every head in the band, nDCG@10.", "",
             f"**Chosen:** {best['band']}, order {best['order']}: mean nDCG@10 {best['mean']:.4f} over the {pairs} "
             f"(model, collection) pairs measured in every order, {best['vs_first_stage']:+.4f} against the first "
             f"stage.", "", "## Mean over those pairs", "", "| order | band | mean nDCG@10 | vs first stage |",
             "|---|---|---|---|"]
    lines += [f"| {r.order} | {r.band} | {r.mean:.4f} | {r.vs_first_stage:+.4f} |" for r in summary.itertuples()]
    columns = [f"{m} / {c}" for m, c in wide.columns]
    lines += ["", "## Every model and collection", "", "| order | band | " + " | ".join(columns) + " |",
              "|---|---|" + "---|" * len(columns)]
    first = table[table.order == "-"].set_index(["model", "collection"])["ndcg10"]
    lines.append("| - | first stage (BM25) | " + " | ".join(f"{first.get(col, float('nan')):.4f}"
                                                          for col in wide.columns) + " |")
    for (order, band), row in wide.iterrows():
        lines.append(f"| {order} | {band} | " + " | ".join("-" if v != v else f"{v:.4f}" for v in row) + " |")
    path.write_text("\n".join(lines) + "\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["smollm2-135m"])
    parser.add_argument("--collections", nargs="+", default=["dl21-bm25", "dl21-splade", "scifact-train", "cacm",
                                                              "vaswani"])
    args = parser.parse_args(argv)
    quiet_offline_environment()
    table = measure(args.models, args.collections)
    summary, pairs = choose(table)
    table.to_csv(RESULTS / "training_free.csv", index=False)
    write_report(table, summary, pairs, RESULTS / "training_free.md")
    print((RESULTS / "training_free.md").read_text())


if __name__ == "__main__":
    main()
