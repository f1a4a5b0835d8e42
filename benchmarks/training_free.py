#!/usr/bin/env python
"""Choose the training-free head set (and prompt order) by measurement, on every model and collection profiled.

Candidates are bands of layers given as fractions of the depth (every head of the layers from ``start`` to
``stop``), so that the winner applies to any model: early, middle, late, the lower half, the middle half, and all
heads (ICR's heads, without its token filter). Each is scored on the stored all-head profiles (``head_profiles.py``)
of the real small models, top-20 BM25 lists, in each prompt order profiled. No qrels choose anything but the band.

    .venv/bin/python benchmarks/training_free.py --models smollm2-135m gemma3-270m

Writes ``benchmarks/results/training_free.md`` / ``.csv``.
"""
from __future__ import annotations

import argparse
import datetime
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from _common import COLLECTIONS, RESULTS, quiet_offline_environment, with_previous  # noqa: E402

BANDS = {"early (0-1/4)": (0.0, 0.25), "middle (1/4-1/2)": (0.25, 0.5), "upper middle (1/2-3/4)": (0.5, 0.75),
         "late (3/4-1)": (0.75, 1.0), "lower half (0-1/2)": (0.0, 0.5), "middle half (1/4-3/4)": (0.25, 0.75),
         "all heads (0-1)": (0.0, 1.0)}
ORDERS = ("first-stage", "reversed", "averaged")
#: a band that stops deeper must beat a shallower one by this much (mean nDCG@10) to be chosen: it costs every pass
COST_MARGIN = 0.005


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
    """The order, then the band: (orders table, bands table, chosen band row).

    The order is chosen on the (model, collection) pairs measured in every order (mean over all bands); the band,
    in that order, on every pair where all bands were measured (both models), as the shallowest band within
    ``COST_MARGIN`` of the best mean.
    """
    systems = table[table.order != "-"]
    first = table[table.order == "-"].set_index(["model", "collection"])["ndcg10"]
    orders = systems.groupby(["model", "collection"])["order"].nunique()
    full = set(orders[orders == orders.max()].index)
    in_full = systems[[pair in full for pair in zip(systems.model, systems.collection)]]
    by_order = in_full.groupby("order")["ndcg10"].agg(["mean", "count"]).sort_values("mean", ascending=False)
    order = by_order.index[0]
    chosen_order = systems[systems.order == order]
    counts = chosen_order.groupby(["model", "collection"])["band"].nunique()
    pairs = set(counts[counts == len(BANDS)].index)  # pairs where every band was measured (profiles deep enough)
    chosen_order = chosen_order[[p in pairs for p in zip(chosen_order.model, chosen_order.collection)]]
    bands = chosen_order.groupby("band")["ndcg10"].mean().rename("mean").reset_index()
    bands["vs_first_stage"] = bands["mean"] - first[[p in pairs for p in first.index]].mean()
    bands["stop"] = [BANDS[b][1] for b in bands["band"]]
    bands = bands.sort_values("mean", ascending=False).reset_index(drop=True)
    close = bands[bands["mean"] >= bands["mean"].max() - COST_MARGIN]
    chosen = bands.loc[close.sort_values(["stop", "mean"], ascending=[True, False]).index[0]]
    return by_order, bands, chosen.to_dict() | {"order": order, "pairs": len(pairs), "order_pairs": len(full)}


def write_report(table, by_order, bands, chosen, path, kept: int = 0):
    wide = table[table.order != "-"].pivot_table(index=["order", "band"], columns=["model", "collection"],
                                                  values="ndcg10")
    lines = ["# The training-free head set, chosen by measurement", "",
             f"Written {datetime.date.today().isoformat()} by `benchmarks/training_free.py`. Top-20 first-stage "
             "lists, 64-token passages, calibrated attention of every head in the band, nDCG@10."
             + (f" {kept} of the {len(table)} figures are kept from the previous run of this script (their profiles "
                "were not on the machine of this run; profiles are not committed)." if kept else ""), "",
             f"**Chosen:** order {chosen['order']} (best mean over the {chosen['order_pairs']} (model, collection) "
             f"pairs measured in every order), band {chosen['band']}: mean nDCG@10 {chosen['mean']:.4f} over the "
             f"{chosen['pairs']} pairs where every band was measured in that order, "
             f"{chosen['vs_first_stage']:+.4f} against the first stage; the shallowest band within {COST_MARGIN} "
             f"of the best mean (a deeper stop costs every pass).",
             "", "## Orders (mean over all bands, pairs measured in every order)", "", "| order | mean nDCG@10 |",
             "|---|---|"]
    lines += [f"| {o} | {r['mean']:.4f} |" for o, r in by_order.iterrows()]
    lines += ["", f"## Bands in the {chosen['order']} order (mean over every pair measured in it)", "",
              "| band | mean nDCG@10 | vs first stage |", "|---|---|---|"]
    lines += [f"| {r.band} | {r.mean:.4f} | {r.vs_first_stage:+.4f} |" for r in bands.itertuples()]
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
    parser.add_argument("--collections", nargs="+", default=["dl21-bm25", "dl21-rm3", "dl21-splade", "scifact-train",
                                                              "cacm", "vaswani", "cisi"])
    args = parser.parse_args(argv)
    quiet_offline_environment()
    table, kept = with_previous(measure(args.models, args.collections), RESULTS / "training_free.csv",
                                ["model", "collection", "order", "band"])
    by_order, bands, chosen = choose(table)
    table.to_csv(RESULTS / "training_free.csv", index=False)
    write_report(table, by_order, bands, chosen, RESULTS / "training_free.md", kept)
    print((RESULTS / "training_free.md").read_text())


if __name__ == "__main__":
    main()
