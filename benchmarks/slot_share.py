#!/usr/bin/env python
"""Position bias before and after: attention share and top-5 placements per prompt slot, as a plot.

From the stored all-head profiles of the training lists (``head_profiles.py``, top-20, both prompt orders):

* left: the share of the heads' raw passage attention that each prompt slot draws (1/20 would be even), for the
  training-free heads in first-stage order ("before": the old default) and for the shipped default's heads in its
  order ("after");
* right: how often the passage at each *first-stage rank* is reranked into the top 5, against how often a passage
  at that rank is relevant (what an unbiased reranker would follow): before, after (the shipped default), and after
  with a per-slot correction learned on these same lists (in-sample: what the correction can do at best; it lost
  in cross-fitting, so the default does not use it).

    .venv/bin/python benchmarks/slot_share.py --model smollm2-135m

Writes ``benchmarks/results/slot_share.png`` and ``slot_share.md``.
"""
from __future__ import annotations

import argparse
import datetime
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from _common import RESULTS, quiet_offline_environment  # noqa: E402

COLLECTIONS = ("dl21-bm25", "dl21-splade", "scifact-train")
TOP = 5


def attention_share(profile, heads):
    """Mean share of the heads' raw passage attention per prompt slot (full lists only)."""
    idx = profile.head_index(heads)
    full = profile.lengths() == profile.raw.shape[2]
    raw = profile.raw[full][:, idx].sum(1)  # [lists, k] in first-stage order
    raw = raw[:, ::-1] if profile.reversed else raw  # prompt order
    return (raw / raw.sum(1, keepdims=True)).mean(0)


def top_rate(profile, scores):
    """Per first-stage rank, the share of lists whose passage there is reranked into the top ``TOP``."""
    import numpy as np
    hits = np.zeros(profile.raw.shape[2])
    full = 0
    for s in scores:
        if len(s) == len(hits):
            hits[np.argsort(-np.asarray(s), kind="stable")[:TOP]] += 1
            full += 1
    return hits / max(full, 1)


def relevant_rate(profile):
    full = profile.lengths() == profile.labels.shape[1]
    return (profile.labels[full] > 0).mean(0).astype(float)


def measure(model: str):
    import numpy as np
    from _profiles import Profile, system_scores

    from pyterrier_headrank.folder import read_fit
    from pyterrier_headrank.heads import HeadSet
    from pyterrier_headrank.registry import default_fit_path

    fit = read_fit(default_fit_path(model))
    order = fit.settings["order"]
    corrected_label = "after, slot-corrected (learned on these lists; not shipped)"
    rows = {"before: training-free heads, first-stage order": [], "after: shipped default, attention only": [],
            corrected_label: [], "relevant": []}
    share_before, share_after = [], []
    for name in COLLECTIONS:
        first = Profile.load(model, name, "first-stage")
        free = HeadSet.middle_layers(first.num_layers, first.num_heads)  # the old default: layers 1/4-1/2
        mine = [Profile.load(model, name, o) for o in (("first-stage", "reversed") if order == "averaged"
                                                        else (order,))]
        share_before.append(attention_share(first, free))
        share_after.append(attention_share(mine[0], fit.heads))
        rows["before: training-free heads, first-stage order"].append(top_rate(first, system_scores([first], free)))
        rows["after: shipped default, attention only"].append(
            top_rate(mine[0], system_scores(mine, fit.heads, fit.settings.get("slot_bias"))))
        rows[corrected_label].append(top_rate(mine[0], system_scores(mine, fit.heads, mine[0].slot_bias(fit.heads))))
        rows["relevant"].append(relevant_rate(first))
    return (np.mean(share_before, 0), np.mean(share_after, 0), {k: np.mean(v, 0) for k, v in rows.items()}, fit)


def plot(before, after, rates, fit, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    slots = np.arange(1, len(before) + 1)
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2))
    left.plot(slots, 100 * before, "o-", label="before: training-free heads, first-stage order")
    left.plot(slots, 100 * after, "s-", label=f"after: shipped heads, {fit.settings['order']} order")
    left.axhline(100 / len(before), color="grey", lw=0.8, ls="--", label="even")
    left.set(xlabel="prompt slot (1 = first passage in the prompt)", ylabel="% of passage attention",
             title="Attention share per prompt slot")
    left.legend(fontsize=8)
    for label, values in rates.items():
        style = "k--" if label == "relevant" else "o-"
        right.plot(slots, 100 * values, style, label="passage is relevant" if label == "relevant" else label,
                   markersize=3)
    right.set(xlabel="first-stage rank", ylabel=f"% of lists: reranked into top {TOP}",
              title=f"Reranked into the top {TOP}, by first-stage rank")
    right.legend(fontsize=8)
    fig.suptitle(f"Position bias, {fit.model} (DL21 BM25, DL21 SPLADE++, SciFact train; top-20)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    args = parser.parse_args(argv)
    quiet_offline_environment()
    before, after, rates, fit = measure(args.model)
    plot(before, after, rates, fit, RESULTS / "slot_share.png")
    ends = lambda a: f"{100 * a[0]:.1f} / {100 * a[len(a) // 2]:.1f} / {100 * a[-1]:.1f}"  # noqa: E731
    lines = ["# Position bias before and after", "",
             f"Written {datetime.date.today().isoformat()} by `benchmarks/slot_share.py --model {args.model}` "
             f"(plot: `slot_share.png`). Lists: {', '.join(COLLECTIONS)}, top-20.", "",
             "| | first / middle / last slot |", "|---|---|",
             f"| attention share, before (training-free heads, first-stage order) | {ends(before)} % |",
             f"| attention share, after (shipped heads, {fit.settings['order']} order) | {ends(after)} % |"]
    for label, values in rates.items():
        lines.append(f"| top-{TOP} rate by first-stage rank 1 / 11 / 20: {label} | {ends(values)} % |")
    (RESULTS / "slot_share.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
