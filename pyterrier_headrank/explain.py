"""Looking inside one ranking: how much attention the query pays to each passage, and how that becomes the score.

:func:`explain` runs the reranker's own pass (its :class:`~pyterrier_headrank.attention.AttentionReader`, prompt,
windows and heads) on one query and its candidates and returns one row per passage:

* ``raw``: the attention mass that the query tokens pay to the passage, summed over the head set with its weights;
* ``calibration``: the same for the content-free query "N/A" (what the passage draws whatever the query);
* ``score``: the reranker's score (``raw - calibration`` for a calibrated HeadRank; windows merged as in ranking);
* ``rank``: 0 for the best passage, as in PyTerrier result frames;
* ``share`` and ``calibration_share``: the mean over the heads (unweighted) of the share of the query's attention
  that lands on the passage, in [0, 1]; what :func:`plot_attention` draws.

Nothing here computes attention a second way: the numbers come from the same readout that ranking uses, so
``explain(...)["score"]`` equals the scores of ``reranker.score_lists`` (tested).
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import pandas as pd
import torch

from .windows import merge_window_scores

COLUMNS = ["position", "docno", "window", "raw", "calibration", "score", "rank", "share", "calibration_share"]


def explain(reranker, query: str, passages: Sequence[str], docnos: Optional[Sequence[str]] = None,
            labels: Optional[Sequence[float]] = None) -> pd.DataFrame:
    """Per-passage attention behind ``reranker``'s ranking of ``passages`` (in first-stage order) for ``query``.

    ``reranker`` is a :class:`~pyterrier_headrank.HeadRank` (zero-shot, with given heads, or fitted). ``docnos`` and
    ``labels`` (relevance grades) are optional and only copied into the frame (``labels`` colours the plot).
    Returns the columns of :data:`COLUMNS` (plus ``label`` and ``text``), rows in first-stage order.

    A list longer than one prompt window is split as in ranking; ``window`` says which window a passage was read in
    (the anchors: window 0). ``raw`` and ``calibration`` are relative to the other passages of that window, so they
    compare across windows only roughly; ``score`` is merged onto one scale as in ranking.
    """
    from .reranker import HeadRank, _clean_text

    if not isinstance(reranker, HeadRank):
        raise TypeError(f"explain: needs a HeadRank (or a subclass), got {type(reranker).__name__}")
    query = _clean_text(query).strip()
    if not query:
        raise ValueError("explain: the query is empty; HeadRank needs query text to score passages")
    texts = [_clean_text(p) for p in passages]
    if not texts:
        raise ValueError("explain: no passages to explain")
    if docnos is not None and len(docnos) != len(texts):
        raise ValueError(f"explain: {len(texts)} passages but {len(docnos)} docnos")
    if labels is not None and len(labels) != len(texts):
        raise ValueError(f"explain: {len(texts)} passages but {len(labels)} labels")

    reader, prompt, heads = reranker._load()
    plan, windows = reranker._windows_for(prompt, query, texts)
    weights = torch.tensor(heads.weights, dtype=torch.float64)
    # a subclass that scores differently (ICR's token filter) keeps its own scores; HeadRank's come from the readout
    own_scoring = type(reranker)._score_windows is not HeadRank._score_windows

    count = len(texts)
    raw, calibration, share, calibration_share = (np.full(count, np.nan) for _ in range(4))
    window_of = np.full(count, -1, dtype=np.int64)
    window_scores = []
    with torch.inference_mode():
        for w, (indices, window) in enumerate(zip(plan, windows)):
            readout = reader.read([window], heads, calibrate=True)
            mass = readout.passage_mass[0, :, : window.num_passages].double().cpu()          # [heads, n]
            cal = readout.calibration_passage_mass[0, :, : window.num_passages].double().cpu()
            w_raw = torch.einsum("hn,h->n", mass, weights).numpy()
            w_cal = torch.einsum("hn,h->n", cal, weights).numpy()
            if own_scoring:
                scores = reranker._score_windows(reader, [window], heads, torch.tensor(heads.weights))[0]
                scores = np.asarray(scores, dtype=np.float64)[: window.num_passages]
            else:  # exactly what HeadRank._score_windows computes
                scores = readout.scores(torch.tensor(heads.weights), calibrate=reranker.calibrate)[0]
                scores = scores[: window.num_passages].double().cpu().numpy()
            window_scores.append(scores)
            for slot, i in enumerate(indices):
                if window_of[i] >= 0:  # an anchor: keep what window 0 read, as the merge does
                    continue
                window_of[i] = w
                raw[i], calibration[i] = w_raw[slot], w_cal[slot]
                share[i], calibration_share[i] = mass[:, slot].mean().item(), cal[:, slot].mean().item()
    score = merge_window_scores(plan, window_scores, count, reranker.n_anchors)
    order = np.argsort(-score, kind="stable")
    rank = np.empty(count, dtype=np.int64)
    rank[order] = np.arange(count)

    frame = pd.DataFrame({
        "position": np.arange(count),
        "docno": list(docnos) if docnos is not None else [str(i) for i in range(count)],
        "window": window_of, "raw": raw, "calibration": calibration, "score": score, "rank": rank,
        "share": share, "calibration_share": calibration_share,
    })
    if labels is not None:
        frame["label"] = np.asarray(labels, dtype=np.float64)
    frame["text"] = texts
    frame.attrs.update(query=query, heads=heads.name, num_heads=len(heads), deepest_layer=heads.deepest_layer,
                       windows=len(plan), calibrated=bool(reranker.calibrate), reranker=repr(reranker))
    return frame


def explain_results(reranker, results: pd.DataFrame, qid, qrels: Optional[pd.DataFrame] = None) -> pd.DataFrame:
    """:func:`explain` for query ``qid`` of a PyTerrier result frame (qid, query, docno, text; first-stage order by
    ``rank``, else by descending ``score``). With ``qrels`` (qid, docno, label), a ``label`` column (0 if unjudged)."""
    field = getattr(reranker, "text_field", "text")
    missing = {"qid", "query", "docno", field} - set(results.columns)
    if missing:
        raise ValueError(f"explain_results: the results lack columns {sorted(missing)} (add text with a text loader)")
    group = results[results["qid"].astype(str) == str(qid)]
    if group.empty:
        raise KeyError(f"explain_results: qid {qid!r} is not in the results")
    if "rank" in group.columns:
        group = group.sort_values("rank", kind="stable")
    elif "score" in group.columns:
        group = group.sort_values("score", ascending=False, kind="stable")
    docnos = group["docno"].astype(str).tolist()
    labels = None
    if qrels is not None:
        judged = qrels[qrels["qid"].astype(str) == str(qid)]
        grades = dict(zip(judged["docno"].astype(str), judged["label"]))
        labels = [float(grades.get(d, 0)) for d in docnos]
    frame = explain(reranker, group["query"].iloc[0], group[field].tolist(), docnos=docnos, labels=labels)
    frame.attrs["qid"] = str(qid)
    return frame


def plot_attention(explained: pd.DataFrame, ax=None, title: Optional[str] = None, path: Optional[str] = None,
                   show_score: bool = True, max_label_chars: int = 40):
    """Bar chart of the share of the query's attention that each passage receives (a frame from :func:`explain`).

    One bar per passage, in first-stage order from the top; the black tick is what the content-free query "N/A"
    pays to the same passage (what calibration subtracts). Each bar is labelled with the reranker's rank (1 = best).
    With a ``label`` column, relevant passages (grade > 0) are drawn in orange. With ``show_score`` (and no ``ax``
    given) a second panel shows the reranker's score (calibrated: attention minus the "N/A" attention), which is what
    orders the passages. Saves a PNG when ``path`` is given. Returns the matplotlib figure.
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    needed = {"position", "docno", "share", "calibration_share", "rank", "score"}
    if not isinstance(explained, pd.DataFrame) or not needed <= set(explained.columns):
        raise ValueError("plot_attention: pass the frame that explain() returns")
    frame = explained.sort_values("position")
    n = len(frame)
    score_ax = None
    if ax is None:
        if show_score:
            fig, (ax, score_ax) = plt.subplots(1, 2, figsize=(10, 1.3 + 0.3 * n), sharey=True,
                                               gridspec_kw={"width_ratios": [3, 2]})
        else:
            fig, ax = plt.subplots(figsize=(7, 1.3 + 0.3 * n))
    else:
        fig = ax.figure
    relevant = frame["label"].to_numpy() > 0 if "label" in frame.columns else np.zeros(n, dtype=bool)
    colours = np.where(relevant, "tab:orange", "tab:blue")
    y = np.arange(n)
    share = 100 * frame["share"].to_numpy()
    calibration = 100 * frame["calibration_share"].to_numpy()
    ax.barh(y, share, color=colours, alpha=0.85)
    ax.scatter(calibration, y, marker="|", s=160, color="black", zorder=3)
    names = [f"[{p + 1}] {d}"[:max_label_chars] for p, d in zip(frame["position"], frame["docno"])]
    ax.set_yticks(y)
    ax.set_yticklabels(names, fontsize=8)
    ax.invert_yaxis()
    right = float(np.nanmax(np.r_[share, calibration])) if n else 1.0
    for yi, end, rank in zip(y, np.fmax(share, calibration), frame["rank"].to_numpy()):
        ax.text(end + right * 0.02, yi, f"rank {rank + 1}", va="center", fontsize=7)
    ax.set_xlim(0, right * 1.2 if right > 0 else 1)
    ax.set_xlabel("share of the query's attention (%, mean over heads)", fontsize=8)
    ax.set_ylabel("first-stage position", fontsize=8)
    handles = [Patch(color="tab:blue", label="passage"),
               plt.Line2D([], [], color="black", marker="|", linestyle="", markersize=10, label='"N/A" query')]
    if relevant.any():
        handles.insert(1, Patch(color="tab:orange", label="relevant"))
    ax.legend(handles=handles, fontsize=7, loc="lower right")
    if score_ax is not None:
        score_ax.barh(y, frame["score"].to_numpy(), color=colours, alpha=0.85)
        score_ax.axvline(0, color="black", linewidth=0.8)
        what = "attention - \"N/A\" attention" if explained.attrs.get("calibrated", True) else "attention"
        score_ax.set_xlabel(f"score ({what}, weighted sum over heads)", fontsize=8)
        score_ax.tick_params(axis="x", labelsize=7)
    query = explained.attrs.get("query", "")
    default = f"{query[:80]}{'...' if len(query) > 80 else ''}\n" \
              f"{explained.attrs.get('num_heads', '?')} heads ({explained.attrs.get('heads', '')})"
    (fig.suptitle if score_ax is not None else ax.set_title)(title or default, fontsize=9)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig
