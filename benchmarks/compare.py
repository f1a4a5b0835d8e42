#!/usr/bin/env python
"""HeadRank against BM25, ICR and RankGPT on named collections: effectiveness, selectivity, time and memory.

Effectiveness (``pt.Experiment``): for each collection, the judged queries (a seeded sample of ``--queries`` of
them), the first stage cut to ``--candidates``, then

    BM25 | BM25 >> ICR | BM25 >> RankGPT | BM25 >> HeadRank (zero-shot) | BM25 >> HeadRank (fitted, with --fitted)

with nDCG@10, RR@10 (MRR@10), time per query (``mrt``: each system's wall time over all the queries, first stage
included, divided by their number), paired t-tests against BM25 with Holm correction, the middle-zone selectivity
gap (:mod:`pyterrier_headrank.metrics`) and, for RankGPT, the share of windows whose output was a full permutation.
All rerankers use the same model, passage truncation and candidate lists. A pooled table treats the queries of all
collections as one sample.

``--systems`` picks and orders the reranker rows; ``--fuse W`` adds "HeadRank (zero-shot, fused W)", the
zero-shot run's attention scores fused with the first stage's (``HeadRank(fuse=W)``'s formula, from the same scores:
no second pass; its time is the zero-shot row's plus the fusion). ``--stored COLLECTION=NAME=PATH`` adds a row
from a run made elsewhere (for example the cross-fitted shipped default that ``effectiveness.py`` keeps): it must
rerank exactly this table's candidate lists, and its time is shown as "–" (cite the cost benchmark for it).
``--runs DIR`` keeps every system's run (``DIR/<collection>/<system>.res.gz``, TREC format via ``pt.io``), its time,
and RankGPT's raw outputs (``rankgpt_outputs.jsonl.gz``: query, window size, output, parse); a later call with the
same ``DIR`` reuses the stored runs and times instead of recomputing them.

Speed (``--speed``): time per query and peak memory of each reranker at 20 and 100 candidates (DL21 BM25 lists),
each (system, size) in a fresh process that loads the model, reranks one short warm-up list, resets the kernel's
peak-RSS mark and then reranks ``--speed-queries`` lists one query at a time. RankGPT is measured as it runs (the
model decides how much it writes) and, as "RankGPT (full output)", forced to write as many tokens as a complete
permutation takes: the cost of a model that follows the output format.

Offline (default) the collections come from the shared folder:
    dl21      DL21 passage, the shipped BM25 top-100 candidates
    scifact   BEIR SciFact test, the shipped Pyserini BM25 (flat) run
    vaswani, cranfield, cacm, cisi   PISA BM25 (porter2) when pyterrier-pisa is installed, else the shipped simple run
With network, ``--online`` maps the names below to ir_datasets (DL19/DL20 use their official BM25 runs, the BEIR
sets PISA BM25 over the corpus); any other ir_datasets id can be given as a name too.

    .venv/bin/python benchmarks/compare.py --queries 10 --speed
    .venv/bin/python benchmarks/compare.py --collections dl21 scifact --fitted fitted/smollm2
    .venv/bin/python benchmarks/compare.py --online --collections dl19 dl20 beir-trec-covid --model qwen3-0.6b
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import pathlib
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import time
import warnings

from _common import RESULTS, quiet_offline_environment

quiet_offline_environment()

#: name -> (collection name for get_collection, first stage: "shipped" run/candidates or "pisa" BM25)
OFFLINE = {
    "dl21": ("dl21-passage-bm25top100", "shipped"),
    "scifact": ("beir-scifact", "shipped"),
    "vaswani": ("vaswani", "pisa"),
    "cranfield": ("cranfield", "pisa"),
    "cacm": ("cacm", "pisa"),
    "cisi": ("cisi", "pisa"),
}
ONLINE = {
    "dl19": ("irds:msmarco-passage/trec-dl-2019/judged", "shipped"),
    "dl20": ("irds:msmarco-passage/trec-dl-2020/judged", "shipped"),
    "dl21": ("irds:msmarco-passage-v2/trec-dl-2021/judged", "shipped"),
    "beir-trec-covid": ("irds:beir/trec-covid", "pisa"),
    "beir-nfcorpus": ("irds:beir/nfcorpus/test", "pisa"),
    "beir-scifact": ("irds:beir/scifact/test", "pisa"),
    "beir-fiqa": ("irds:beir/fiqa/test", "pisa"),
    "beir-arguana": ("irds:beir/arguana", "pisa"),
    "beir-scidocs": ("irds:beir/scidocs", "pisa"),
    "beir-touche2020": ("irds:beir/webis-touche2020/v2", "pisa"),
    "beir-dbpedia": ("irds:beir/dbpedia-entity/test", "pisa"),
}
SPEED_SYSTEMS = ("HeadRank", "HeadRank (batch 4)", "ICR", "RankGPT", "RankGPT (full output)")
SYSTEMS = ("ICR", "RankGPT", "HeadRank (zero-shot)")


# ---- systems ----------------------------------------------------------------------------------------------------
def make_rerankers(args):
    """Name -> reranker; all share one copy of the model (load_model caches it)."""
    import pandas as pd

    from pyterrier_headrank import HeadRank
    from pyterrier_headrank.baselines import ICR

    common = dict(device=args.device, max_passage_tokens=args.passage_tokens, batch_size=args.batch_size)
    makers = {
        "ICR": lambda: ICR(args.model, **common),
        "RankGPT": lambda: recording_rankgpt()(args.model, max_new_tokens=args.rankgpt_max_new_tokens, **common),
        "HeadRank (zero-shot)": lambda: HeadRank(args.model, heads="zero-shot", **common),
    }
    systems = {name: makers[name]() for name in args.systems}
    if args.fitted:
        if not hasattr(HeadRank, "from_pretrained"):
            raise SystemExit("compare.py: --fitted needs HeadRank.from_pretrained, which this version lacks")
        systems["HeadRank (fitted)"] = HeadRank.from_pretrained(args.fitted, **common)
    warm = pd.DataFrame({"qid": "warm-up", "query": "a short query", "docno": ["d1", "d2"],
                         "text": ["a first passage", "a second passage"]})
    for system in systems.values():  # load the model and run once, so that no timed run pays for it
        system(warm)
    return systems


def recording_rankgpt():
    """RankGPT that keeps every raw output in ``raw_outputs``: one dict per window with the (truncated) query, the
    window's size, the token budget, the output and its parse (through RankGPT's public ``record_output`` hook)."""
    from pyterrier_headrank.baselines import RankGPT

    class RecordingRankGPT(RankGPT):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.raw_outputs = []

        def record_output(self, query, passages, max_new_tokens, text, parsed):
            super().record_output(query, passages, max_new_tokens, text, parsed)
            _, tokenizer = self.loaded()
            self.raw_outputs.append({
                "query": query, "n": passages, "max_new_tokens": max_new_tokens,
                "output_tokens": len(tokenizer(text, add_special_tokens=False)["input_ids"]), "output": text,
                "order": list(parsed.order), "complete": bool(parsed.complete), "named": parsed.named,
                "repeated": parsed.repeated, "out_of_range": parsed.out_of_range})

    return RecordingRankGPT


def full_output_rankgpt():
    """RankGPT forced to write as many tokens as ``[1] > [2] > ... > [n]`` takes (speed only), through RankGPT's
    public ``generation_config`` hook."""
    from pyterrier_headrank.baselines import RankGPT

    class RankGPTFullOutput(RankGPT):
        def generation_config(self, max_new_tokens, pad_token_id, eos_token_ids, passages):
            config = super().generation_config(max_new_tokens, pad_token_id, eos_token_ids, passages)
            _, tokenizer = self.loaded()
            target = " > ".join(f"[{i}]" for i in range(1, min(self.window_size, passages) + 1))
            config.min_new_tokens = config.max_new_tokens = len(tokenizer(target, add_special_tokens=False)["input_ids"])
            return config

    return RankGPTFullOutput


def make_speed_system(name, args):
    from pyterrier_headrank import HeadRank
    from pyterrier_headrank.baselines import ICR, RankGPT

    common = dict(device=args.device, max_passage_tokens=args.passage_tokens, batch_size=args.batch_size)
    if name == "HeadRank":
        return HeadRank(args.model, **common)
    if name == "HeadRank (batch 4)":  # the windows of one long list batched together (padded)
        return HeadRank(args.model, **{**common, "batch_size": 4})
    if name == "HeadRank (fitted)":
        return HeadRank.from_pretrained(args.fitted, **common)
    if name == "ICR":
        return ICR(args.model, **common)
    if name == "RankGPT":
        return RankGPT(args.model, **common)
    if name == "RankGPT (full output)":
        return full_output_rankgpt()(args.model, **common)
    raise ValueError(name)


# ---- collections -------------------------------------------------------------------------------------------------
def resolve(name: str, online: bool):
    table = ONLINE if online else OFFLINE
    if name in table:
        return table[name]
    if online:
        return (name if name.startswith("irds:") else f"irds:{name}", "pisa")
    raise SystemExit(f"compare.py: unknown offline collection {name!r}; known: {', '.join(OFFLINE)} "
                     f"(use --online for ir_datasets ids)")


def first_stage(collection, kind: str, k: int):
    """(transformer: topics -> top-k candidates with text, description)."""
    import pyterrier as pt

    if kind == "pisa":
        try:
            from pyterrier_headrank.first_stage import bm25
            return bm25(collection, num_results=max(k, 100)) % k >> collection.text_loader(), "PISA BM25 (porter2)"
        except ImportError as err:
            if not getattr(collection, "spec", None) or not collection.spec.run:
                raise
            warnings.warn(f"compare.py: {err}; using the shipped run of {collection!r}", stacklevel=2)
    run = collection.get_results()
    return pt.Transformer.from_df(run) % k, ("shipped BM25 candidates" if getattr(collection, "spec", None) and
                                             collection.spec.candidates else "shipped BM25 run")


def sample_topics(collection, n: int, seed: int):
    topics = collection.get_topics()
    qrels = collection.get_qrels()
    judged = topics[topics.qid.isin(set(qrels.qid))]
    if n and n < len(judged):
        judged = judged.sample(n, random_state=seed)
    return judged.sort_values("qid").reset_index(drop=True), qrels[qrels.qid.isin(set(judged.qid))]


# ---- effectiveness -------------------------------------------------------------------------------------------------
def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name).strip("_").lower()


def _timed_run(system, frame):
    start = time.perf_counter()
    out = system(frame)
    return out, time.perf_counter() - start


def parse_stored(specs) -> dict:
    """``COLLECTION=NAME=PATH`` arguments -> {collection: [(row name, path)]}, every file checked to exist."""
    stored = {}
    for spec in specs:
        parts = spec.split("=", 1)
        name_path = parts[1].rsplit("=", 1) if len(parts) == 2 else []
        if len(name_path) != 2 or not all(part.strip() for part in (parts[0], *name_path)):
            raise SystemExit(f"compare.py: --stored {spec!r} is not COLLECTION=NAME=PATH")
        if not pathlib.Path(name_path[1]).is_file():
            raise SystemExit(f"compare.py: --stored run {name_path[1]!r} does not exist")
        stored.setdefault(parts[0], []).append((name_path[0], name_path[1]))
    return stored


def stored_run(path: str, base, row: str):
    """A run read from ``path``, accepted only if it reranks exactly ``base``'s lists (same queries, same docnos):
    otherwise its row would compare different candidates, so the call stops and says where they differ."""
    import pyterrier as pt

    run = pt.io.read_results(path)
    expected = base.groupby(base.qid.astype(str)).docno.agg(frozenset)
    found = run.groupby(run.qid.astype(str)).docno.agg(frozenset)
    differ = sorted(q for q in expected.index.union(found.index)
                    if q not in expected.index or q not in found.index or expected[q] != found[q])
    if differ:
        raise SystemExit(f"compare.py: --stored run {path} for {row!r} does not rerank this table's first stage: "
                         f"{len(differ)} of {len(expected)} queries differ (first: qid {differ[0]})")
    return run


def run_collection(name, args, rerankers):
    import gzip

    import pyterrier as pt
    from ir_measures import RR, nDCG

    from pyterrier_headrank.data import get_collection
    from pyterrier_headrank.fusion import fuse

    source, kind = resolve(name, args.online)
    collection = get_collection(source)
    topics, qrels = sample_topics(collection, args.queries, args.seed)
    first, first_desc = first_stage(collection, kind, args.candidates)
    store = pathlib.Path(args.runs) / name if args.runs else None
    if store is not None:
        store.mkdir(parents=True, exist_ok=True)
    for reranker in rerankers.values():
        if hasattr(reranker, "format_stats"):
            reranker.format_stats.reset()
    print(f"[{name}] {len(topics)} queries, {first_desc} top-{args.candidates}", flush=True)
    base, base_seconds = _timed_run(first, topics)
    kept, seconds, format_ok = {"BM25": base}, {"BM25": base_seconds}, {}
    for system_name, reranker in rerankers.items():
        row = f"BM25 >> {system_name}"
        path = store / f"{_slug(system_name)}.res.gz" if store is not None else None
        meta_path = store / f"{_slug(system_name)}.json" if store is not None else None
        if path is not None and path.exists() and meta_path.exists():  # computed before: reuse
            meta = json.loads(meta_path.read_text())
            if meta["qids"] == sorted(topics.qid.astype(str)) and meta["candidates"] == args.candidates:
                kept[row] = pt.io.read_results(str(path))
                seconds[row], format_ok[system_name] = meta["seconds"], meta.get("format_success", math.nan)
                print(f"    {row}: reused {path}", flush=True)
                continue
        raw = getattr(reranker, "raw_outputs", None)
        if raw is not None:
            raw.clear()
        kept[row], took = _timed_run(reranker, base)
        seconds[row] = base_seconds + took
        stats = getattr(reranker, "format_stats", None)
        format_ok[system_name] = stats.success_rate if stats is not None else math.nan
        print(f"    {row}: {seconds[row] / len(topics):.1f} s/query", flush=True)
        if path is not None:
            pt.io.write_results(kept[row], str(path))
            meta_path.write_text(json.dumps({"system": system_name, "model": args.model, "candidates": args.candidates,
                                             "passage_tokens": args.passage_tokens, "seconds": seconds[row],
                                             "format_success": format_ok[system_name],
                                             "qids": sorted(topics.qid.astype(str))}))
            if raw is not None:
                by_query = dict(zip(topics["query"].str.strip(), topics.qid.astype(str)))
                with gzip.open(store / f"{_slug(system_name)}_outputs.jsonl.gz", "wt") as handle:
                    for record in raw:
                        handle.write(json.dumps({"qid": by_query.get(record["query"]), **record}) + "\n")
    for system_name, path in args.stored.get(name, []):
        row = f"BM25 >> {system_name}"
        kept[row], seconds[row] = stored_run(path, base, row), math.nan
        print(f"    {row}: read {path}", flush=True)
    if "HeadRank (zero-shot)" in rerankers:
        attention = kept["BM25 >> HeadRank (zero-shot)"]
        for weight in args.fuse:
            start = time.perf_counter()
            row = f"BM25 >> HeadRank (zero-shot, fused {weight:g})"
            kept[row] = fuse(base, attention, weight)
            seconds[row] = seconds["BM25 >> HeadRank (zero-shot)"] + time.perf_counter() - start
            if store is not None:
                pt.io.write_results(kept[row], str(store / f"{_slug(row[len('BM25 >> '):])}.res.gz"))
    names = list(kept)
    table = pt.Experiment([kept[n] for n in names], topics, qrels, [nDCG @ 10, RR @ 10], names=names, baseline=0,
                          correction="holm", verbose=False)
    table["mrt"] = [1000.0 * seconds[n] / len(topics) for n in names]  # ms per query, first stage included
    table.insert(0, "collection", name)
    table["queries"] = len(topics)
    table["first_stage"] = first_desc
    try:
        from pyterrier_headrank.metrics import selectivity
        table["selectivity_gap_pp"] = [selectivity(kept[n], kept["BM25"], qrels).gap_pp for n in names]
    except ImportError:
        pass
    table["format_success"] = [format_ok.get(n[len("BM25 >> "):], math.nan) for n in names]
    runs = {n: kept[n].assign(qid=name + ":" + kept[n].qid.astype(str)) for n in names}
    pooled = (topics.assign(qid=name + ":" + topics.qid), qrels.assign(qid=name + ":" + qrels.qid.astype(str)), runs)
    print(table[["name", "nDCG@10", "RR@10", "mrt"]].to_string(index=False), flush=True)
    return table, pooled


def pooled_table(pooled, names):
    import pandas as pd
    import pyterrier as pt
    from ir_measures import RR, nDCG

    topics = pd.concat([p[0] for p in pooled])
    qrels = pd.concat([p[1] for p in pooled])
    frames = [pd.concat([p[2][n] for p in pooled]) for n in names]
    table = pt.Experiment(frames, topics, qrels, [nDCG @ 10, RR @ 10], names=names, baseline=0, correction="holm",
                          verbose=False)
    table.insert(0, "collection", "all (pooled)")
    table["queries"] = len(topics)
    try:
        from pyterrier_headrank.metrics import selectivity
        table["selectivity_gap_pp"] = [selectivity(f, frames[0], qrels).gap_pp for f in frames]
    except ImportError:
        pass
    return table


# ---- speed -------------------------------------------------------------------------------------------------------
def _status_kib(field: str) -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return -1


def speed_worker(args):
    """One (system, size) in this process; prints one JSON line."""
    import torch

    from pyterrier_headrank.data import get_collection
    from pyterrier_headrank.models import load_model

    load_model(args.model, args.device) if args.speed_worker != "HeadRank (fitted)" else None
    candidates = get_collection("dl21-passage-bm25top100").get_candidates()
    qids = sorted(candidates.qid.unique())
    import random
    random.Random(args.seed).shuffle(qids)
    system = make_speed_system(args.speed_worker, args)
    warm = candidates[(candidates.qid == qids[-1]) & (candidates["rank"] < 5)]
    system(warm)  # first call: lazy set-up, allocator warm-up
    frames = [candidates[(candidates.qid == q) & (candidates["rank"] < args.speed_k)] for q in qids[:args.speed_queries]]
    cuda = torch.cuda.is_available() and str(args.device or "cuda").startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    before = _status_kib("VmRSS")
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")  # resets the peak-RSS mark (VmHWM) to the current RSS
        reset = True
    except OSError:
        reset = False
    times = []
    for frame in frames:
        start = time.perf_counter()
        system(frame)
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    result = {"system": args.speed_worker, "candidates": args.speed_k, "queries": len(frames),
              "median_s": statistics.median(times), "mean_s": statistics.fmean(times), "times_s": times,
              "peak_rss_mib": _status_kib("VmHWM") / 1024 if reset else resource.getrusage(
                  resource.RUSAGE_SELF).ru_maxrss / 1024,
              "peak_over_start_mib": (_status_kib("VmHWM") - before) / 1024 if reset else math.nan,
              "cuda_peak_mib": torch.cuda.max_memory_allocated() / 2 ** 20 if cuda else math.nan,
              "threads": torch.get_num_threads()}
    stats = getattr(system, "format_stats", None)
    if stats is not None:
        result["format_success"] = stats.success_rate
    print("SPEED " + json.dumps(result), flush=True)


def run_speed(args):
    systems = list(args.speed_systems) + (["HeadRank (fitted)"] if args.fitted else [])
    rows = []
    for k in args.speed_sizes:
        for name in systems:
            command = [sys.executable, __file__, "--speed-worker", name, "--speed-k", str(k), "--speed-queries",
                       str(args.speed_queries), "--model", args.model, "--passage-tokens", str(args.passage_tokens),
                       "--batch-size", str(args.batch_size), "--seed", str(args.seed)]
            command += ["--device", args.device] if args.device else []
            command += ["--threads", str(args.threads)] if args.threads else []
            command += ["--fitted", args.fitted] if args.fitted else []
            print(f"[speed] {name} @ {k} candidates ...", flush=True)
            load = os.getloadavg()[0]
            done = subprocess.run(command, capture_output=True, text=True)
            lines = [l for l in done.stdout.splitlines() if l.startswith("SPEED ")]
            if done.returncode or not lines:
                print(done.stdout[-2000:], done.stderr[-4000:], file=sys.stderr)
                raise SystemExit(f"compare.py: speed worker {name} @ {k} failed")
            row = json.loads(lines[-1][len("SPEED "):])
            row["load_before"] = load
            row["load_after"] = os.getloadavg()[0]
            rows.append(row)
            print(f"    {row['median_s']:.2f} s/query (median of {row['queries']}), peak RSS "
                  f"{row['peak_rss_mib']:.0f} MiB (+{row['peak_over_start_mib']:.0f})", flush=True)
    return rows


# ---- reporting ---------------------------------------------------------------------------------------------------
def _fmt(value, digits=3):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _fmt_p(value):
    """A p-value to three places, or in scientific notation below 0.001 (where three places would print 0.000)."""
    if isinstance(value, float) and 0 < value < 0.001:  # False for NaN, which _fmt prints as "–"
        return f"{value:.0e}"
    return _fmt(value, 3)


def effectiveness_markdown(table) -> str:
    has_sel = "selectivity_gap_pp" in table.columns
    head = ["system", "nDCG@10", "p (Holm)", "RR@10", "p (Holm)"] + (["selectivity gap (pp)"] if has_sel else []) + \
        ["s/query", "RankGPT format ok"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, row in table.iterrows():
        cells = [row["name"], _fmt(row["nDCG@10"]), _fmt_p(row.get("nDCG@10 p-value corrected")),
                 _fmt(row["RR@10"]), _fmt_p(row.get("RR@10 p-value corrected"))]
        for index, metric in ((1, "nDCG@10"), (3, "RR@10")):
            p_value = row.get(f"{metric} p-value corrected", math.nan)
            if p_value is not None and not math.isnan(p_value) and p_value < 0.05:
                cells[index] = f"**{cells[index]}**"
        if has_sel:
            cells.append(_fmt(row["selectivity_gap_pp"], 1))
        cells.append(_fmt(row["mrt"] / 1000.0, 2) if "mrt" in row and not math.isnan(row["mrt"]) else "–")
        cells.append(_fmt(row.get("format_success", math.nan), 2))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def speed_markdown(rows) -> str:
    lines = ["| system | candidates | s/query (median) | s/query (mean) | peak RSS (MiB) | peak above start (MiB) | "
             "× HeadRank time |", "|---|---|---|---|---|---|---|"]
    base = {r["candidates"]: r["median_s"] for r in rows if r["system"] == "HeadRank"}
    for r in rows:
        ratio = r["median_s"] / base[r["candidates"]] if r["candidates"] in base else math.nan
        lines.append(f"| {r['system']} | {r['candidates']} | {r['median_s']:.2f} | {r['mean_s']:.2f} | "
                     f"{r['peak_rss_mib']:.0f} | {_fmt(r['peak_over_start_mib'], 0)} | {_fmt(ratio, 1)} |")
    return "\n".join(lines)


def plot(tables, out_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    collections = [t["collection"].iloc[0] for t in tables]
    systems = list(dict.fromkeys(name for t in tables for name in t["name"]))
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.2), gridspec_kw={"width_ratios": [3, 1.3]})
    width = 0.8 / len(systems)
    x = np.arange(len(collections))
    for i, system in enumerate(systems):
        values = [float(t.loc[t.name == system, "nDCG@10"].iloc[0]) if (t.name == system).any() else np.nan
                  for t in tables]
        left.bar(x + i * width - 0.4 + width / 2, values, width, label=system)
    left.set_xticks(x, collections)
    left.set_ylabel("nDCG@10")
    left.legend(fontsize=8, ncol=2)
    left.set_title("Effectiveness (queries per set in compare.md)")
    timed = [t for t in tables if "mrt" in t.columns]
    seconds = {s: [float(t.loc[t.name == s, "mrt"].iloc[0]) / 1000 for t in timed if (t.name == s).any()]
               for s in systems}
    seconds = {s: np.mean(v) for s, v in seconds.items() if v and not np.isnan(v).any()}  # stored rows: no time
    if seconds:
        colours = [f"C{systems.index(s)}" for s in seconds]
        right.barh(range(len(seconds)), list(seconds.values()), color=colours)
        right.set_yticks(range(len(seconds)), list(seconds), fontsize=8)
        right.set_xscale("log")
        right.set_xlabel("seconds per query (mean over sets)")
        right.invert_yaxis()
    fig.tight_layout()
    fig.savefig(out_path, dpi=120)


def write_report(args, tables, pooled, speed_rows, started):
    import pandas as pd
    import torch

    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = RESULTS / args.name
    md = [f"# HeadRank vs BM25, ICR and RankGPT ({args.model})", "",
          f"Generated by `benchmarks/compare.py` on {started:%Y-%m-%d %H:%M} UTC "
          f"({platform.machine()}, {os.cpu_count()} CPU cores, torch threads {torch.get_num_threads()}, "
          f"load average at the end {os.getloadavg()[0]:.1f}).", "",
          f"Command: `{shlex.join(['python', 'benchmarks/compare.py'] + sys.argv[1:])}`", "",
          f"Settings: model `{args.model}`, top-{args.candidates} candidates, passages cut to {args.passage_tokens} "
          f"tokens for every reranker, batch size {args.batch_size}, {args.queries or 'all'} judged queries per "
          f"collection (seeded sample, seed {args.seed}). p-values: paired t-test against BM25, Holm-corrected "
          f"over the systems of a table; bold where significant at 0.05. `s/query` is each system's wall time over "
          f"all the queries (first stage included) divided by their number. Selectivity gap: share of the first "
          f"stage's middle-zone relevant passages lifted into the top quartile minus the same share for irrelevant "
          f"ones, in points. "
          f"RankGPT format ok: share of its windows whose output parsed as a full permutation.", ""]
    if tables:
        for table in tables:
            md += [f"## {table['collection'].iloc[0]} ({int(table['queries'].iloc[0])} queries, "
                   f"{table['first_stage'].iloc[0]})", "", effectiveness_markdown(table), ""]
        if pooled is not None:
            md += [f"## All collections pooled ({int(pooled['queries'].iloc[0])} queries)", "",
                   effectiveness_markdown(pooled.assign(mrt=math.nan, format_success=math.nan)), ""]
        if "selectivity_gap_pp" not in tables[0].columns:
            md += ["(No selectivity column: `pyterrier_headrank.metrics` is not available.)", ""]
        frame = pd.concat(tables + ([pooled] if pooled is not None else []), ignore_index=True)
        frame.to_csv(f"{stem}.csv", index=False)
        plot(tables, f"{stem}.png")
        md += [f"![nDCG@10 and time per query]({stem.name}.png)", ""]
    if speed_rows:
        pd.DataFrame(speed_rows).to_csv(f"{stem}_speed.csv" if tables else f"{stem}.csv", index=False)
        loads = [r["load_before"] for r in speed_rows] + [r["load_after"] for r in speed_rows]
        md += ["## Speed and memory", "",
               f"DL21 BM25 candidate lists, one query at a time, {speed_rows[0]['queries']} queries per cell after "
               f"a warm-up list; passages cut to {args.passage_tokens} tokens; batch size {args.batch_size} unless "
               f"the name says otherwise; each cell in a fresh process. "
               f"Peak RSS is the whole process (model weights included); 'above start' is what the reranking "
               f"itself added. 'RankGPT (full output)' is forced to write as many tokens as a complete "
               f"permutation of its window; plain 'RankGPT' stops when the model ends its turn. Load average "
               f"during the runs {min(loads):.1f} to {max(loads):.1f} on {os.cpu_count()} cores (a shared "
               f"machine: compare ratios, not absolute times).", "", speed_markdown(speed_rows), ""]
    path = pathlib.Path(f"{stem}.md")
    path.write_text("\n".join(md))
    print(f"wrote {path}", flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--collections", nargs="+", default=list(OFFLINE))
    parser.add_argument("--online", action="store_true", help="names are ir_datasets collections (needs network)")
    parser.add_argument("--queries", type=int, default=10, help="judged queries per collection (0: all)")
    parser.add_argument("--candidates", type=int, default=20)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=SYSTEMS,
                        help="reranker rows, in this order")
    parser.add_argument("--fuse", type=float, nargs="*", default=[],
                        help="weights: rows of the zero-shot HeadRank run fused with the first stage")
    parser.add_argument("--rankgpt-max-new-tokens", type=int, default=None,
                        help="RankGPT's generation budget per window (default: its own, 5 per passage + 8)")
    parser.add_argument("--runs", default=None, help="folder that keeps (and reuses) each system's run")
    parser.add_argument("--stored", nargs="*", default=[], metavar="COLLECTION=NAME=PATH",
                        help="rows from runs made elsewhere, checked to rerank the same candidate lists")
    parser.add_argument("--fitted", default=None, help="folder of a fitted HeadRank (HeadRank.from_pretrained)")
    parser.add_argument("--passage-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--device", default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--speed", action="store_true", help="also measure time and memory at --speed-sizes")
    parser.add_argument("--speed-only", action="store_true")
    parser.add_argument("--speed-sizes", type=int, nargs="+", default=[20, 100])
    parser.add_argument("--speed-queries", type=int, default=3)
    parser.add_argument("--speed-systems", nargs="+", default=list(SPEED_SYSTEMS), choices=SPEED_SYSTEMS)
    parser.add_argument("--name", default="compare", help="file stem under benchmarks/results/")
    parser.add_argument("--speed-worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--speed-k", type=int, default=20, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.stored = parse_stored(args.stored)
    unknown = sorted(set(args.stored) - set(args.collections))
    if unknown:
        parser.error(f"--stored names collections not in --collections: {unknown}")
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    if args.speed_worker:
        return speed_worker(args)
    started = datetime.datetime.now(datetime.timezone.utc)
    tables, pooled = [], None
    if not args.speed_only:
        rerankers = make_rerankers(args)
        pools = []
        for name in args.collections:
            table, pool = run_collection(name, args, rerankers)
            tables.append(table)
            pools.append(pool)
        if len(pools) > 1:  # rows that every collection has (a --stored row may belong to one of them)
            pooled = pooled_table(pools, [n for n in tables[0]["name"] if all((t.name == n).any() for t in tables)])
    speed_rows = run_speed(args) if (args.speed or args.speed_only) else []
    write_report(args, tables, pooled, speed_rows, started)


if __name__ == "__main__":
    main()
