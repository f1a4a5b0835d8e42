#!/usr/bin/env python
"""Can the learned head weights do better? Pair weighting, feature transforms, joint fusion and model ensembles,
each measured out-of-fold in the protocol of ``default_fit.py``.

The shipped weighted recipe (:mod:`pyterrier_headrank.head_weights`) is a pairwise logistic fit over every head's
calibrated mass, each pair of differently graded candidates counting once. This script tries the obvious changes,
from the stored all-head profiles (``head_profiles.py``, reversed prompt order, top-20, 64-token passages), with no
model pass:

* **pair weighting**: each list's pairs sharing one unit (every query counts the same), pairs weighted by their gain
  gap ``2^g1 - 2^g2``, or by the nDCG@10 change of swapping them at their first-stage positions (LambdaRank's weight);
* **features**: the log of the mass, the mass z-scored within its list per head, its rank within the list;
* **joint fusion**: the first stage's z-scored score as one more feature, its weight learned with the heads' (the
  shipped fusion picks one weight on a grid after the fit);
* **ensembles**: the model's out-of-fold scores plus ``a`` times another model's (each z-scored per list), the partner
  fitted with its own best weighted recipe.

Every variant is fitted on four folds of the training lists (DL21 with three first stages, 100 SciFact train
queries; folds by query id as in ``default_fit.py``) for each strength ``c`` and scored on the fifth; the table shows
each variant at its best ``c`` (mean out-of-fold nDCG@10 over the four collections, attention only).

    .venv/bin/python benchmarks/weight_levers.py --model qwen2.5-coder-0.5b

Writes ``benchmarks/results/weight_levers_<model>.md`` / ``.csv``.
"""
from __future__ import annotations

import argparse
import datetime
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from _common import RESULTS, quiet_offline_environment  # noqa: E402

CS = (1e-4, 3e-4, 1e-3, 3e-3)
PAIRS = ("uniform", "per list", "gain gap", "lambda")
FEATURES = ("calibrated mass", "log mass", "z-score in list", "rank in list", "mass + first stage")
#: the best weighted recipe (deepest layer, c) of each model's reversed-order search (``size_curve.md``)
RECIPES = {"smollm2-135m": (19, 1e-4), "gemma3-270m": (11, 3e-4), "qwen2.5-coder-0.5b": (15, 1e-3)}
ALPHAS = (0.25, 0.5, 1.0)


def features(view, i: int, used: int, kind: str):
    """List ``i`` of ``view`` as ``[features, n]`` (first-stage order) under the transform ``kind``."""
    import numpy as np

    from pyterrier_headrank.fusion import zscore

    n = view.lengths()[i]
    mass = view.calibrated[i, :used, :n].astype(np.float64)
    if kind == "calibrated mass":
        return mass
    if kind == "log mass":
        return np.log(np.maximum(mass, 1e-6))
    if kind == "z-score in list":
        return np.stack([zscore(row) for row in mass])
    if kind == "rank in list":
        return mass.argsort(1).argsort(1) / n
    if kind == "mass + first stage":
        return np.vstack([mass, zscore(view.first_stage[i, :n].astype(np.float64))])
    raise ValueError(kind)


def pair_weights(labels, scheme: str):
    """One weight per pair, in the order of :func:`~pyterrier_headrank.head_weights.pair_differences`."""
    import numpy as np

    out = []
    for grades in labels:
        better, worse = np.nonzero(grades[:, None] > grades[None, :])
        gain = 2.0 ** grades[better] - 2.0 ** grades[worse]
        if scheme == "uniform":
            out.append(np.ones(len(better)))
        elif scheme == "per list":
            out.append(np.full(len(better), 1.0 / max(len(better), 1)))
        elif scheme == "gain gap":
            out.append(gain)
        else:  # lambda: |delta nDCG@10| of swapping the pair at its first-stage positions
            discount = np.where(np.arange(len(grades)) < 10, 1 / np.log2(np.arange(len(grades)) + 2), 0.0)
            ideal = np.sort(2.0 ** grades - 1)[::-1] @ discount
            out.append(np.abs(gain * (discount[better] - discount[worse])) / max(ideal, 1e-9))
    weights = np.concatenate(out)
    return weights / weights.mean()


def fit(lists, labels, c: float, scheme: str = "uniform"):
    """Feature weights from a pairwise logistic fit on standardised pair differences (as ``learn_head_weights``)."""
    from pyterrier_headrank.head_weights import fit_standardised, pair_differences

    standardised, scale = fit_standardised(pair_differences(lists, labels), c, pair_weights(labels, scheme))
    return standardised / scale


def out_of_fold(data, used: int, kind: str, scheme: str, cs=CS):
    """{c: {collection: [scores per list]}} for one variant, each fold scored by a fit without it."""
    from default_fit import FOLDS, TRAIN, fold_of

    views = {n: data[n]["reversed"] for n in TRAIN}
    feats = {n: [features(v, i, used, kind) for i in range(len(v.qids))] for n, v in views.items()}
    labels = {n: [v.labels[i, :v.lengths()[i]] for i in range(len(v.qids))] for n, v in views.items()}
    scores = {c: {n: [None] * len(v.qids) for n, v in views.items()} for c in cs}
    for fold in range(FOLDS):
        train = [(n, i) for n, v in views.items() for i, q in enumerate(v.qids) if fold_of(q) != fold]
        for c in cs:
            weights = fit([feats[n][i] for n, i in train], [labels[n][i] for n, i in train], c, scheme)
            for n, v in views.items():
                for i, q in enumerate(v.qids):
                    if fold_of(q) == fold:
                        scores[c][n][i] = weights @ feats[n][i]
    return scores


def ndcg_row(data, qrels, scores) -> dict:
    from default_fit import TRAIN

    from pyterrier_headrank.metrics import ndcg10
    values = {n: ndcg10(data[n]["base"].lists(scores[n]), qrels[n]) for n in TRAIN}
    return {**values, "mean": sum(values.values()) / len(values)}


def variant_rows(model: str, data, qrels):
    """Every (lever, variant, c) row, and the model's own out-of-fold scores of the shipped kind of fit."""
    from pyterrier_headrank.head_weights import DEFAULT_C

    max_layer, shipped_c = RECIPES.get(model, (data["dl21-bm25"]["base"].max_layer, DEFAULT_C))
    used = (max_layer + 1) * data["dl21-bm25"]["base"].num_heads
    rows, base = [], None
    for lever, kind, scheme in ([("pair weighting", "calibrated mass", s) for s in PAIRS]
                                + [("features", k, "uniform") for k in FEATURES[1:]]):
        variant = scheme if lever == "pair weighting" else kind
        lever = "joint fusion" if kind == "mass + first stage" else lever
        for c, scores in out_of_fold(data, used, kind, scheme).items():
            rows.append({"lever": lever, "variant": variant, "c": c, **ndcg_row(data, qrels, scores)})
            if (kind, scheme) == ("calibrated mass", "uniform") and c == shipped_c:
                base = scores
    return rows, base


def ensemble_rows(model: str, base, data, qrels, partners):
    """The model's out-of-fold scores plus ``a`` times each partner's (its own best weighted recipe), z-scored."""
    from default_fit import load_training

    from pyterrier_headrank.fusion import zscore
    rows = []
    for partner in partners:
        layer, c = RECIPES[partner]
        try:
            other = load_training(partner, 64, ("reversed",))
        except FileNotFoundError as err:
            print(f"weight_levers.py: no ensemble with {partner}: {err}", flush=True)
            continue
        used = (layer + 1) * other["dl21-bm25"]["base"].num_heads
        theirs = out_of_fold(other, used, "calibrated mass", "uniform", (c,))[c]
        for a in ALPHAS:
            mixed = {n: [zscore(s) + a * zscore(t) for s, t in zip(base[n], theirs[n])] for n in base}
            rows.append({"lever": "ensemble", "variant": f"+ {a:g} x {partner}", "c": c,
                         **ndcg_row(data, qrels, mixed)})
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="qwen2.5-coder-0.5b")
    parser.add_argument("--partners", nargs="*", default=None,
                        help="models to ensemble with (default: the other models of RECIPES with stored profiles)")
    args = parser.parse_args(argv)
    quiet_offline_environment()
    import pandas as pd
    from default_fit import TRAIN, load_training, qrels_of

    data, qrels = load_training(args.model, 64, ("reversed",)), qrels_of(TRAIN)
    first = {n: data[n]["base"].first_stage_scores() for n in TRAIN}
    rows = [{"lever": "first stage", "variant": "-", "c": float("nan"), **ndcg_row(data, qrels, first)}]
    found, base = variant_rows(args.model, data, qrels)
    partners = [m for m in RECIPES if m != args.model] if args.partners is None else args.partners
    table = pd.DataFrame(rows + found + ensemble_rows(args.model, base, data, qrels, partners))
    stem = f"weight_levers_{args.model}"
    table.to_csv(RESULTS / f"{stem}.csv", index=False)
    write_report(args.model, table, RESULTS / f"{stem}.md")
    print((RESULTS / f"{stem}.md").read_text())


def write_report(model: str, table, path):
    from default_fit import TRAIN

    best = table.loc[table.groupby(["lever", "variant"], sort=False)["mean"].idxmax()]
    shipped = best[(best.lever == "pair weighting") & (best.variant == "uniform")]["mean"].iloc[0]
    cols = [*TRAIN, "mean"]
    lines = [f"# Levers on the learned head weights ({model}), out-of-fold", "",
             f"Written {datetime.date.today().isoformat()} by `benchmarks/weight_levers.py --model {model}`. "
             "5-fold cross-fitting over the training lists as in `default_fit.py` (reversed order, top-20, "
             "64-token passages); attention only; each variant at its best c of "
             f"{', '.join(f'{c:g}' for c in CS)}. The shipped kind of fit is `pair weighting / uniform`.", "",
             "| lever | variant | best c (ensembles: the partner's) | " + " | ".join(cols) + " | vs shipped kind |",
             "|---|---|---|" + "---|" * (len(cols) + 1)]
    for row in best.to_dict("records"):
        c = "-" if row["c"] != row["c"] else f"{row['c']:g}"
        lines.append(f"| {row['lever']} | {row['variant']} | {c} | "
                     + " | ".join(f"{row[c]:.4f}" for c in cols) + f" | {row['mean'] - shipped:+.4f} |")
    top = best.iloc[1:].loc[best.iloc[1:]["mean"].idxmax()]
    lines += ["", f"Best: {top['lever']} / {top['variant']}, {top['mean']:.4f} ({top['mean'] - shipped:+.4f} against "
              f"the shipped kind, {top['mean'] - best.iloc[0]['mean']:+.4f} against the first stage)."]
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
