#!/usr/bin/env python
"""Choose the recipe of a model's shipped general-purpose fit by cross-fitting, then write the fit.

Training data: every training list in the shared folder (DL21 with three first stages, BM25, BM25+RM3 and SPLADE++,
and a seeded sample of SciFact train; ``--train`` names other collections), top-20, from the stored all-head
profiles (``head_profiles.py``, one pass per list and prompt order). The candidate recipes cross the prompt order
(first-stage, reversed, averaged), the deepest layer a recipe may use (two thirds of the depth, or every layer),
how heads are chosen and weighted, and the per-slot correction. Two methods: **select** keeps ``k`` heads by
entropy-regularised selection (weight ``lam`` on the entropy), each with weight 1; **weighted** keeps every head of
the allowed layers with a weight from a pairwise logistic fit (:mod:`pyterrier_headrank.head_weights`, inverse L2
strength ``c``). Each recipe is scored out-of-fold:
5 folds by query id (a DL21 query falls in one fold with all three of its first stages), heads selected and the slot
correction learned on the other folds (``--orders`` and ``--methods`` narrow the search). The recipe with the best
mean out-of-fold nDCG@10 over the four training collections wins, at the shallowest depth cap that comes within
``COST_MARGIN`` of the best (a deeper stop slows every pass); its fusion weight is chosen on the pooled out-of-fold
scores. The final fit selects on all training lists and is saved with ``HeadRank.save`` (heads, order, slot
correction, fusion weight, passage length).

    .venv/bin/python benchmarks/default_fit.py --model smollm2-135m --out pyterrier_headrank/pretrained/smollm2-135m-general

Writes ``benchmarks/results/default_fit.md`` / ``.csv`` (every recipe's out-of-fold nDCG@10, the depth/cost
trade-off) and the fit folder.
"""
from __future__ import annotations

import argparse
import datetime
import itertools
import pathlib
import sys
import zlib

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from _common import COLLECTIONS, RESULTS, quiet_offline_environment  # noqa: E402

TRAIN = ("dl21-bm25", "dl21-rm3", "dl21-splade", "scifact-train")
ORDERS = ("first-stage", "reversed", "averaged")
KS = (4, 8, 16)
LAMS = (0.0, 0.1)
#: inverse L2 strengths tried for learned head weights (``pyterrier_headrank.head_weights``)
CS = (1e-4, 3e-4, 1e-3)
METHODS = ("select", "weighted")
FOLDS = 5
#: nDCG@10 a deeper stop must gain (out-of-fold mean) to be chosen over a shallower, cheaper one
COST_MARGIN = 0.005


def fold_of(qid: str) -> int:
    return zlib.crc32(str(qid).encode()) % FOLDS


def load_training(model: str, passage_tokens: int, orders=ORDERS, train=TRAIN):
    """{collection: {order: Profile}} for the training collections ``train`` and ``orders`` (the averaged order is
    the two orders' mean masses), plus ``"base"``: one of them, for what every order shares (query ids, docnos,
    labels, first-stage scores, all in first-stage order)."""
    import numpy as np
    from _profiles import Profile

    stored = sorted({"first-stage", "reversed"} if "averaged" in orders else set(orders))
    data = {}
    for name in train:
        views = {o: Profile.load(model, name, o, passage_tokens=passage_tokens) for o in stored}
        if "averaged" in orders:
            first, back = views["first-stage"], views["reversed"]
            assert (first.qids == back.qids).all()
            np.testing.assert_array_equal(first.labels, back.labels)
            views["averaged"] = Profile(first.qids, first.docnos, first.first_stage, first.labels,
                                        (first.calibrated + back.calibrated) / 2, (first.raw + back.raw) / 2,
                                        first.num_layers, first.num_heads, False)
        data[name] = {**views, "base": views[stored[0]]}
    return data


def pooled_profile(profiles, keep_by_name):
    """One Profile over several collections' lists (qids made unique per collection), reading the layers that all of
    them read (a profile made with ``--max-layer`` reads fewer)."""
    import numpy as np
    from _profiles import Profile

    parts = [p.subset(keep_by_name[n]) for n, p in profiles.items()]
    heads = min(p.calibrated.shape[1] for p in parts)
    parts = [p.head_range(heads) for p in parts]
    names = [n for n in profiles for _ in range(int(keep_by_name[n].sum()))]
    first = parts[0]
    pooled = Profile(np.array([f"{n}:{q}" for n, q in zip(names, np.concatenate([p.qids for p in parts]))],
                              dtype=object),
                     np.concatenate([p.docnos for p in parts]), np.concatenate([p.first_stage for p in parts]),
                     np.concatenate([p.labels for p in parts]), np.concatenate([p.calibrated for p in parts]),
                     np.concatenate([p.raw for p in parts]), first.num_layers, first.num_heads, first.reversed)
    return pooled


def capped(profile, max_layer: int):
    """``profile`` (a HeadProfile) with every head below ``max_layer`` left out of selection."""
    import copy

    import numpy as np
    out = copy.deepcopy(profile)
    out.ndcg[max_layer + 1:] = np.nan
    out.entropy[max_layer + 1:] = np.nan
    out.max_layer = max_layer
    return out


def fitted_heads(model, recipe, sources, exclude=frozenset(), held_fold=None):
    """The recipe's heads (and slot correction) fitted on ``sources``, leaving out the query ids ``exclude`` and,
    where ``held_fold`` is given, every query id of that fold (:func:`fold_of`)."""
    import numpy as np
    from _profiles import Profile

    views = {n: Profile.load(model, n, recipe["order"]) for n in sources}
    keep = {n: np.array([q not in exclude and (held_fold is None or fold_of(q) != held_fold) for q in v.qids])
            for n, v in views.items()}
    pooled = pooled_profile(views, keep)
    heads = recipe_heads(recipe, pooled)
    return heads, (pooled.slot_bias(heads) if recipe["slot"] else None)


def recipe_heads(recipe, pooled, head_profile=None, name=None):
    """The recipe's head set on the lists of ``pooled`` (a Profile): the ``k`` selected heads (``head_profile`` is
    ``pooled.head_profile()``, passed when it is at hand), or every head of the allowed layers with learned weights.
    Recipes written before weights existed have no ``method``: they select."""
    if recipe.get("method", "select") == "weighted":
        heads = pooled.weighted_heads(recipe["max_layer"], recipe["c"])
        return heads if name is None else type(heads)(heads.heads, heads.weights, name=name)
    profile = head_profile if head_profile is not None else pooled.head_profile()
    return capped(profile, recipe["max_layer"]).select(recipe["k"], recipe["lam"], name=name)


def recipe_scores(model, recipe, sources, views, cross: bool):
    """Per list of ``views`` (one Profile per prompt order scored, same lists), the scores of the recipe fitted on
    ``sources``. ``cross``: the target shares query ids with the sources, so it is cross-fitted: :data:`FOLDS` folds
    of its query ids, each scored by a fit that never saw them."""
    import numpy as np
    from _profiles import system_scores

    qids = views[0].qids
    scores = [None] * len(qids)
    for fold in range(FOLDS) if cross else [None]:
        held = np.array([fold is None or fold_of(q) == fold for q in qids])
        heads, bias = fitted_heads(model, recipe, sources, frozenset(qids[held]) if cross else frozenset())
        for j, s in zip(np.flatnonzero(held), system_scores([v.subset(held) for v in views], heads, bias)):
            scores[j] = s
    return scores


def recipes(num_layers: int, orders=ORDERS, methods=METHODS, deepest: int = None):
    """The candidate recipes; depth caps are two thirds of the depth and every layer, or ``deepest`` (the deepest
    layer every training profile read) where that is shallower."""
    from pyterrier_headrank.selection import default_max_layer
    deepest = num_layers - 1 if deepest is None else deepest
    caps = sorted({min(default_max_layer(num_layers), deepest), min(num_layers - 1, deepest)})
    slots = (False, True)
    selected = [dict(method="select", order=o, max_layer=c, k=k, lam=lam, slot=s)
                for o, c, k, lam, s in itertools.product(orders, caps, KS, LAMS, slots)]
    weighted = [dict(method="weighted", order=o, max_layer=cap, c=c, slot=s)
                for o, cap, c, s in itertools.product(orders, caps, CS, slots)]
    return [r for r in (selected if "select" in methods else []) + (weighted if "weighted" in methods else [])
            if not (r["slot"] and r["order"] == "averaged")]  # averaging the orders is itself the position correction


def out_of_fold(data, qrels, num_layers, orders=ORDERS, methods=METHODS):
    """Every recipe's out-of-fold scores: {recipe index: {collection: [scores per list]}}."""
    import numpy as np
    from _profiles import system_scores

    candidates = recipes(num_layers, orders, methods, min(data[n]["base"].max_layer for n in data))
    scores = {i: {n: [None] * len(data[n]["base"].qids) for n in data} for i in range(len(candidates))}
    for order in orders:
        for fold in range(FOLDS):
            train = {n: np.array([fold_of(q) != fold for q in data[n][order].qids]) for n in data}
            pooled = pooled_profile({n: data[n][order] for n in data}, train)
            profile = pooled.head_profile() if "select" in methods else None  # only selection reads it
            for i, recipe in enumerate(candidates):
                if recipe["order"] != order:
                    continue
                heads = recipe_heads(recipe, pooled, profile)
                bias = pooled.slot_bias(heads) if recipe["slot"] and order != "averaged" else None
                for n in data:
                    held = ~train[n]
                    views = ([data[n]["first-stage"], data[n]["reversed"]] if order == "averaged"
                             else [data[n][order]])
                    fold_scores = system_scores([v.subset(held) for v in views], heads, bias)
                    for j, s in zip(np.flatnonzero(held), fold_scores):
                        scores[i][n][j] = s
            print(f"  {order} fold {fold}: {len(heads)} heads, deepest {heads.deepest_layer}", flush=True)
    return candidates, scores


def choose(table) -> int:
    """The row of the chosen recipe: the best one at the shallowest depth cap whose best recipe is within
    :data:`COST_MARGIN` of the best overall (a deeper stop costs every later pass; it must earn its cost)."""
    rows = table.iloc[1:]
    overall = rows["mean"].max()
    for cap in sorted(rows["max_layer"].unique()):
        group = rows[rows["max_layer"] == cap]
        if group["mean"].max() >= overall - COST_MARGIN:
            return int(group["mean"].idxmax())
    raise AssertionError("unreachable: the deepest cap holds the best recipe")


def qrels_of(names):
    from pyterrier_headrank.data import get_collection
    return {n: get_collection(COLLECTIONS[n].shared, source="shared").get_qrels() for n in names}


def recipe_table(data, qrels, candidates, scores):
    import pandas as pd

    from pyterrier_headrank.metrics import ndcg10

    rows = []
    first = {n: ndcg10(data[n]["base"].lists(data[n]["base"].first_stage_scores()), qrels[n])
             for n in data}
    rows.append({"recipe": "first stage", **first, "mean": sum(first.values()) / len(first)})
    for i, recipe in enumerate(candidates):
        values = {n: ndcg10(data[n]["base"].lists(scores[i][n]), qrels[n]) for n in data}
        rows.append({"recipe": describe(recipe), **recipe, **values, "mean": sum(values.values()) / len(values)})
    return pd.DataFrame(rows)


def describe(recipe) -> str:
    slot = ", slot-corrected" if recipe["slot"] else ""
    if recipe.get("method", "select") == "weighted":
        return f"{recipe['order']}, layers<={recipe['max_layer']}, weighted c={recipe['c']:g}{slot}"
    return f"{recipe['order']}, layers<={recipe['max_layer']}, k={recipe['k']}, lam={recipe['lam']:g}{slot}"


def fusion_for(data, qrels, oof):
    """The fusion weight with the best pooled out-of-fold nDCG@10, and its table."""
    from pyterrier_headrank.fusion import best_weight
    from pyterrier_headrank.metrics import ndcg10

    lists = []
    for n in data:
        view = data[n]["base"]
        for q, docs, first, s in zip(view.qids, view.docnos, view.first_stage_scores(), oof[n]):
            lists.append((f"{n}:{q}", list(docs[:len(s)]), first, s))
    all_qrels = prefixed_qrels({n: qrels[n] for n in data})
    return best_weight(lists, lambda runs: ndcg10(runs, all_qrels))


def prefixed_qrels(qrels: dict):
    """``{collection: qrels}`` as one frame whose qids are prefixed ``collection:``, the pooled lists' qids (query
    ids of different collections may clash)."""
    import pandas as pd

    return pd.concat([q.assign(qid=f"{n}:" + q.qid.astype(str)) for n, q in qrels.items()], ignore_index=True)


def final_fit(data, recipe):
    """The chosen recipe fitted on every training list: (heads, slot bias, the pooled head profile)."""
    import numpy as np

    order = recipe["order"]
    views = {n: data[n][order] for n in data}
    pooled = pooled_profile(views, {n: np.ones(len(v.qids), bool) for n, v in views.items()})
    profile = pooled.head_profile()
    heads = recipe_heads(recipe, pooled, profile,
                         name=f"general {describe(recipe)} on {len(pooled.qids)} training lists ({', '.join(data)})")
    bias = pooled.slot_bias(heads) if recipe["slot"] else None
    return heads, bias, profile, len(pooled.qids)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--passage-tokens", type=int, default=64)
    parser.add_argument("--out", default=None, help="write the fit to this folder")
    parser.add_argument("--orders", nargs="+", default=list(ORDERS), choices=ORDERS,
                        help="prompt orders the search tries (each needs its stored profiles; 'averaged' needs both)")
    parser.add_argument("--train", nargs="+", default=list(TRAIN),
                        help="training collections (benchmarks/_common.py names; each needs its stored profiles)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS,
                        help="select: k heads by entropy-regularised selection; weighted: every head of the allowed "
                             "layers with weights from a pairwise logistic fit")
    args = parser.parse_args(argv)
    quiet_offline_environment()
    data = load_training(args.model, args.passage_tokens, args.orders, tuple(args.train))
    qrels = qrels_of(args.train)
    num_layers = data[args.train[0]]["base"].num_layers
    candidates, scores = out_of_fold(data, qrels, num_layers, args.orders, args.methods)
    table = recipe_table(data, qrels, candidates, scores)
    best = choose(table) - 1
    recipe = candidates[best]
    weight, fusion_table = fusion_for(data, qrels, scores[best])
    weight = weight or None  # a weight of 0 ranks as attention alone: store "no fusion"
    heads, bias, profile, count = final_fit(data, recipe)
    stem = f"default_fit_{args.model}"
    table.to_csv(RESULTS / f"{stem}.csv", index=False)
    write_report(args, table, recipe, weight, fusion_table, heads, num_layers, RESULTS / f"{stem}.md")
    if args.out:
        save_fit(args, recipe, weight, heads, bias, profile, count, table.iloc[best + 1], fusion_table)
    print((RESULTS / f"{stem}.md").read_text())


def save_fit(args, recipe, weight, heads, bias, profile, count, oof_row, fusion_table):
    from pyterrier_headrank import HeadRank

    reranker = HeadRank(args.model, heads=heads, order=recipe["order"], fuse=weight, slot_bias=bias,
                        max_passage_tokens=args.passage_tokens)
    reranker.head_profile_ = profile
    reranker.fit_summary_ = {
        "made_by": "benchmarks/default_fit.py", "date": datetime.date.today().isoformat(),
        "training_lists": count, "training_collections": {n: COLLECTIONS[n].label for n in args.train},
        "candidates_per_list": 20, "recipe": recipe, "fusion_weight": weight,
        "out_of_fold_ndcg10": {n: round(float(oof_row[n]), 4) for n in args.train},
        "fusion_table": fusion_table.round(4).to_dict("records"),
        "alignment": "none (no LoRA): " + ("every head of the allowed layers, weights from a pairwise logistic fit"
                                           if recipe.get("method") == "weighted"
                                           else "heads selected by entropy-regularised selection"),
    }
    reranker.save(args.out)
    print(f"fit written to {args.out}")


def shown_heads(heads) -> str:
    if len(set(heads.weights)) == 1:
        return str(list(heads.heads))
    return f"{len(heads)} heads with learned weights (layers 0-{heads.deepest_layer})"


def write_report(args, table, recipe, weight, fusion_table, heads, num_layers, path):
    shown = table.sort_values("mean", ascending=False)
    cols = ["recipe", *args.train, "mean"]
    lines = [f"# Shipped default fit for {args.model}: recipe chosen by 5-fold cross-fitting", "",
             f"Training lists (top-20, {args.passage_tokens}-token passages): "
             f"{', '.join(COLLECTIONS[n].label for n in args.train)}. Out-of-fold nDCG@10 (attention only, no fusion).",
             f"Written {datetime.date.today().isoformat()} by `benchmarks/default_fit.py --model {args.model}"
             f"{'' if tuple(args.orders) == ORDERS else ' --orders ' + ' '.join(args.orders)}"
             f"{'' if tuple(args.train) == TRAIN else ' --train ' + ' '.join(args.train)}`. Prompt orders "
             f"searched: {', '.join(args.orders)}.", "",
             f"**Chosen:** {describe(recipe)}; fusion weight {weight or 0:g} (pooled out-of-fold); final heads "
             f"{shown_heads(heads)} (deepest layer {heads.deepest_layer} of {num_layers}: a pass costs "
             f"{(heads.deepest_layer + 1) / num_layers:.2f} of a full forward pass).", "",
             "## Depth and cost", "",
             "| deepest layer selection may use | best recipe at that depth | mean out-of-fold nDCG@10 |", "|---|---|---|"]
    for cap, group in table.iloc[1:].groupby("max_layer"):
        top = group.loc[group["mean"].idxmax()]
        lines.append(f"| {int(cap)} | {top['recipe']} | {top['mean']:.4f} |")
    lines += ["", "## Fusion weight (pooled out-of-fold nDCG@10)", "", "| weight | nDCG@10 |", "|---|---|"]
    lines += [f"| {r.weight:g} | {r.ndcg10:.4f} |" for r in fusion_table.itertuples()]
    lines += ["", "## Every recipe (best first)", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, row in shown.iterrows():
        lines.append("| " + " | ".join([str(row["recipe"])] + [f"{row[c]:.4f}" for c in cols[1:]]) + " |")
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
