#!/usr/bin/env python
"""Every head's score of every candidate, stored once per (model, collection, prompt order), for the benchmarks.

A head set's score of a passage is a weighted sum of its heads' calibrated attention masses (``Readout.scores``), so
one pass that reads *all* heads of layers ``0..max_layer`` gives, without more passes, the scores of every head set
whose heads lie in those layers: training-free sets, fitted sets, cross-fitted sets, fused or not.
``effectiveness.py`` and ``default_fit.py`` read these files; ``tests/test_benchmark_scripts.py`` checks that
scores rebuilt from a profile equal what ``HeadRank`` returns for the same heads.

The pass is HeadRank's own: the reranker's prompt and windows (:meth:`HeadRank.windows`) and its attention reader
(:func:`pyterrier_headrank.selection.read_all_heads`). Lists must fit one window (top-20 lists do).

    .venv/bin/python benchmarks/head_profiles.py --model smollm2-135m --collections dl21-bm25 scifact-train \
        --orders first-stage reversed
"""
from __future__ import annotations

import argparse
import os
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from _common import ROOT, candidate_lists, grouped, quiet_offline_environment  # noqa: E402

#: Where profiles are kept (not committed: tens of MB); ``$HEADRANK_PROFILES`` moves them.
PROFILES = pathlib.Path(os.environ.get("HEADRANK_PROFILES", ROOT / "benchmarks" / ".profiles"))


def profile_path(model: str, collection: str, order: str, k: int, passage_tokens: int) -> pathlib.Path:
    tag = pathlib.Path(model).stem if model.endswith(".gguf") else model.replace("/", "_")
    return PROFILES / tag / f"{collection}.{order}.top{k}.p{passage_tokens}.npz"


def stored_passes(model: str, name: str, order: str, k: int, passage_tokens: int, heads: int) -> dict:
    """``{(query, docnos): (calibrated, raw)}`` from the stored profiles of other collections over the same shared
    data (``scifact-100`` is a sample of ``scifact``'s lists): a list whose query and candidates, in the same order,
    were read before gives the same prompt and the same masses, so it is copied instead of recomputed."""
    from _common import COLLECTIONS

    found = {}
    for other, spec in COLLECTIONS.items():
        path = profile_path(model, other, order, k, passage_tokens)
        if other != name and spec.shared == COLLECTIONS[name].shared and path.exists():
            found.update(passes_in(path, heads))
    return found


def passes_in(path: pathlib.Path, heads: int) -> dict:
    """The lists of one stored profile as ``{(query, docnos): (calibrated, raw)}`` (first-stage order), cut to the
    first ``heads`` heads; empty where the profile read fewer heads."""
    import numpy as np

    with np.load(path, allow_pickle=True) as old:
        if old["calibrated"].shape[1] < heads:
            return {}
        found = {}
        for query, ids, cal, raw, labels in zip(old["queries"], old["docnos"], old["calibrated"], old["raw"],
                                                old["labels"]):
            n = int((labels >= 0).sum())
            found[(str(query), tuple(ids[:n]))] = (cal[:heads, :n], raw[:heads, :n])
        return found


def profile_collection(reranker, name: str, order: str, k: int, max_layer: int, verbose: bool = True,
                       reuse: dict = None):
    """Read every head of layers ``0..max_layer`` on each list of ``name``; arrays in first-stage order. Lists found in
    ``reuse`` (:func:`stored_passes`) are copied from there."""
    import numpy as np

    from pyterrier_headrank.selection import read_all_heads

    frame, qrels = candidate_lists(name, k)
    grades = {(q, d): int(l) for q, d, l in qrels[["qid", "docno", "label"]].itertuples(index=False)}
    reader = reranker.engine().reader
    lists = grouped(frame)
    heads = (max_layer + 1) * reader.num_heads
    calibrated = np.full((len(lists), heads, k), np.nan, dtype=np.float32)
    raw = np.full_like(calibrated, np.nan)
    labels = np.full((len(lists), k), -1, dtype=np.int8)  # -1: no candidate in this slot
    docnos = np.full((len(lists), k), "", dtype=object)
    first = np.full((len(lists), k), np.nan)
    started = time.time()
    reuse, copied = reuse or {}, 0
    for i, (qid, query, ids, texts, scores) in enumerate(lists):
        n = len(ids)
        labels[i, :n] = [grades.get((qid, d), 0) for d in ids]
        docnos[i, :n], first[i, :n] = ids, scores
        if (query, tuple(ids)) in reuse:
            calibrated[i, :, :n], raw[i, :, :n] = reuse[(query, tuple(ids))]
            copied += 1
            continue
        plan, windows = reranker.windows(query, texts, reverse=(order == "reversed"))
        if len(windows) != 1:
            raise SystemExit(f"head_profiles.py: {name} qid {qid} needs {len(windows)} windows; use shorter lists")
        (cal,), (mass,) = read_all_heads(reader, windows, max_layer, verbose=False)
        back = slice(None, None, -1) if order == "reversed" else slice(None)
        calibrated[i, :, :n], raw[i, :, :n] = cal[:, back], mass[:, back]
        if verbose and (i + 1) % 25 == 0:
            print(f"  {name} {order}: {i + 1}/{len(lists)} lists, {time.time() - started:.0f} s", flush=True)
    qids = np.array([q for q, *_ in lists], dtype=object)
    queries = np.array([q for _, q, *_ in lists], dtype=object)
    return dict(qids=qids, queries=queries, docnos=docnos, first_stage=first, labels=labels, calibrated=calibrated,
                raw=raw, num_heads=reader.num_heads, num_layers=reader.num_layers, max_layer=max_layer,
                seconds=time.time() - started, copied=copied)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--collections", nargs="+", required=True)
    parser.add_argument("--orders", nargs="+", default=["first-stage"], choices=["first-stage", "reversed"])
    parser.add_argument("--candidates", type=int, default=20)
    parser.add_argument("--passage-tokens", type=int, default=64)
    parser.add_argument("--max-layer", type=int, default=None, help="deepest layer read (default: the last)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--force", action="store_true", help="recompute profiles that exist")
    args = parser.parse_args(argv)
    quiet_offline_environment()
    import numpy as np
    import torch

    from pyterrier_headrank import HeadRank
    torch.set_num_threads(args.threads)
    reranker = HeadRank(args.model, heads=[(0, 0)], max_passage_tokens=args.passage_tokens)
    reader = reranker.engine().reader
    max_layer = reader.num_layers - 1 if args.max_layer is None else args.max_layer
    for name in args.collections:
        for order in args.orders:
            path = profile_path(args.model, name, order, args.candidates, args.passage_tokens)
            if path.exists() and not args.force:
                with np.load(path, allow_pickle=True) as old:
                    if int(old["max_layer"]) >= max_layer:
                        print(f"{path}: exists", flush=True)
                        continue
            reuse = stored_passes(args.model, name, order, args.candidates, args.passage_tokens,
                                  (max_layer + 1) * reader.num_heads)
            data = profile_collection(reranker, name, order, args.candidates, max_layer, reuse=reuse)
            path.parent.mkdir(parents=True, exist_ok=True)
            np.savez_compressed(path, **data)
            print(f"{path}: {len(data['qids'])} lists ({data['copied']} copied from other profiles), "
                  f"{data['seconds']:.0f} s", flush=True)


if __name__ == "__main__":
    main()
