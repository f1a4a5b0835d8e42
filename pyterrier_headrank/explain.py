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

from .attention_ranker import AttentionRanker
from .candidates import candidate_lists, with_grades
from .frames import clean_text, first_stage_order
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
    compare across windows only roughly; ``score`` is merged onto one scale as in ranking. The prompt runs in the
    reranker's order (``first-stage`` or ``reversed``; ``averaged`` mixes two reads and is refused).
    """
    query, texts = _checked(reranker, query, passages, docnos, labels)
    reader, prompt, heads = reranker.engine()
    reverse = reranker.order == "reversed"
    plan, windows = reranker.windows(query, texts, reverse)
    reads = [_read_window(reranker, reader, window, heads, reverse) for window in windows]
    columns = _per_passage(plan, reads, len(texts))
    score = merge_window_scores(plan, [read["score"] for read in reads], len(texts), reranker.n_anchors)
    rank = np.empty(len(texts), dtype=np.int64)
    rank[np.argsort(-score, kind="stable")] = np.arange(len(texts))
    frame = pd.DataFrame({
        "position": np.arange(len(texts)),
        "docno": list(docnos) if docnos is not None else [str(i) for i in range(len(texts))],
        "window": columns.pop("window"), **{k: columns[k] for k in ("raw", "calibration")}, "score": score,
        "rank": rank, **{k: columns[k] for k in ("share", "calibration_share")},
    })
    if labels is not None:
        frame["label"] = np.asarray(labels, dtype=np.float64)
    frame["text"] = texts
    frame.attrs.update(query=query, heads=heads.name, num_heads=len(heads), deepest_layer=heads.deepest_layer,
                       windows=len(plan), calibrated=bool(reranker.calibrate), reranker=repr(reranker))
    return frame


def _checked(reranker, query, passages, docnos, labels):
    """(query, passage texts) after the checks that make a bad call fail before any model runs."""
    if not isinstance(reranker, AttentionRanker):
        raise TypeError(f"explain: needs a HeadRank or an ICR (an attention ranker), got {type(reranker).__name__}")
    if reranker.order == "averaged":
        raise ValueError("explain: order='averaged' averages two reads of each window; explain one order at a time "
                         "(reranker.order = 'first-stage' or 'reversed')")
    query = clean_text(query).strip()
    if not query:
        raise ValueError("explain: the query is empty; HeadRank needs query text to score passages")
    texts = [clean_text(p) for p in passages]
    if not texts:
        raise ValueError("explain: no passages to explain")
    for name, values in (("docnos", docnos), ("labels", labels)):
        if values is not None and len(values) != len(texts):
            raise ValueError(f"explain: {len(texts)} passages but {len(values)} {name}")
    return query, texts


def _read_window(reranker, reader, window, heads, reverse: bool) -> dict:
    """What one window's pass reads, per passage in plan order: weighted raw and calibration mass, mean shares over
    the heads, and the reranker's own window scores (a subclass such as ICR scores its own way)."""
    weights = torch.tensor(heads.weights, dtype=torch.float64)
    n = window.num_passages
    with torch.inference_mode():
        readout = reader.read([window], heads, calibrate=True)
        scores = np.asarray(reranker.window_scores(reader, [window], heads), dtype=np.float64)[0, :n]
    mass = readout.passage_mass[0, :, :n].double().cpu()  # [heads, n]
    cal = readout.calibration_passage_mass[0, :, :n].double().cpu()
    read = {"raw": torch.einsum("hn,h->n", mass, weights).numpy(), "calibration": torch.einsum("hn,h->n", cal, weights)
            .numpy(), "share": mass.mean(0).numpy(), "calibration_share": cal.mean(0).numpy(), "score": scores}
    return {k: v[::-1].copy() for k, v in read.items()} if reverse else read


def _per_passage(plan, reads, count: int) -> dict:
    """Each passage's values from the first window that read it (anchors: window 0, as the merge keeps them)."""
    columns = {k: np.full(count, np.nan) for k in ("raw", "calibration", "share", "calibration_share")}
    columns["window"] = np.full(count, -1, dtype=np.int64)
    for w, (indices, read) in enumerate(zip(plan, reads)):
        for slot, i in enumerate(indices):
            if columns["window"][i] < 0:
                columns["window"][i] = w
                for key in ("raw", "calibration", "share", "calibration_share"):
                    columns[key][i] = read[key][slot]
    return columns


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
    (candidates,) = candidate_lists(first_stage_order(group), field, "explain_results")
    if qrels is not None:
        (candidates,) = with_grades([candidates], qrels)
    labels = None if candidates.labels is None else candidates.labels.tolist()
    frame = explain(reranker, candidates.query, candidates.texts, docnos=candidates.docnos, labels=labels)
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
    fig, ax, score_ax = _axes(ax, show_score, n)
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
        _draw_scores(score_ax, y, frame["score"].to_numpy(), colours, explained.attrs.get("calibrated", True))
    query = explained.attrs.get("query", "")
    default = f"{query[:80]}{'...' if len(query) > 80 else ''}\n" \
              f"{explained.attrs.get('num_heads', '?')} heads ({explained.attrs.get('heads', '')})"
    (fig.suptitle if score_ax is not None else ax.set_title)(title or default, fontsize=9)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig


def _axes(ax, show_score: bool, n: int):
    """(figure, attention axes, score axes or None): new ones sized for ``n`` passages unless ``ax`` is given."""
    import matplotlib.pyplot as plt

    if ax is not None:
        return ax.figure, ax, None
    if show_score:
        fig, (ax, score_ax) = plt.subplots(1, 2, figsize=(10, 1.3 + 0.3 * n), sharey=True,
                                           gridspec_kw={"width_ratios": [3, 2]})
        return fig, ax, score_ax
    fig, ax = plt.subplots(figsize=(7, 1.3 + 0.3 * n))
    return fig, ax, None


def _draw_scores(score_ax, y, scores, colours, calibrated: bool) -> None:
    """The second panel: the reranker's score per passage, which is what orders them."""
    score_ax.barh(y, scores, color=colours, alpha=0.85)
    score_ax.axvline(0, color="black", linewidth=0.8)
    what = "attention - \"N/A\" attention" if calibrated else "attention"
    score_ax.set_xlabel(f"score ({what}, weighted sum over heads)", fontsize=8)
    score_ax.tick_params(axis="x", labelsize=7)
