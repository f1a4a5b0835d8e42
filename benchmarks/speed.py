#!/usr/bin/env python
"""Time per query and peak memory of HeadRank against a full-depth pass, ICR-style eager attention and a bare pass.

For each model and candidate count (one DL21 query's BM25 candidates, in BM25 order, all in one prompt window):

  (a) headrank   HeadRank.score_lists: one pass ended inside the deepest layer of the zero-shot head set, SDPA,
                 calibrated (the "N/A" part beside the query part, no KV cache); includes building the prompt.
  (b) full       the same reader with truncate=False (every layer runs).
  (c) eager      ICR-style: eager attention with output_attentions=True over the full prompt, every layer, all L x L
                 maps kept, passage scores from all heads. One pass (the query); ICR's calibration would need a second
                 identical pass, so c/a in time is a lower bound for calibrated ICR. Run on the base decoder (no LM
                 head: a full CausalLM call would also materialise L x vocab logits), which favours (c).
  (d) bare       the floor: the base decoder over the same prompt (prefix + query), SDPA, no cache, no reading, no
                 calibration, stopped after the same layer as (a).

Every measurement is one run in a fresh process (forked from a server that has imported torch and transformers and
run nothing): it loads the model (a saved copy of the weights), builds the inputs, starts the thread pool and kernels
with small ops, resets the kernel's peak-RSS mark (/proc/self/clear_refs) and runs the variant once. That run gives the
wall-clock and CPU time and the peak RSS (VmHWM) minus the RSS before it; ``ru_maxrss`` after minus before is recorded
too. ``--reps`` repetitions interleave the variants (every variant once per repetition, the order rotating); medians
are reported with the load average of every run. (c) is skipped, with its estimated need, where the estimate
exceeds the memory budget.

    .venv/bin/python benchmarks/speed.py            # full run (~20 min on 2 idle CPU cores; far longer when shared)
    .venv/bin/python benchmarks/speed.py --quick    # smoke run, tiny sizes
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import shutil
import sys
import tempfile
import time

from _common import RESULTS
from _fresh_process import cpu_name, in_fresh_process
from _speed_bench import (
    CANDIDATES,
    GIB,
    MODELS,
    VARIANTS,
    job_measure,
    job_prepare,
    load_query,
    oom_text,
)
from _speed_report import assess_targets, build_ratios, build_rows, fmt, report_notes, write_report


def orchestrate(args) -> None:
    import torch
    import transformers
    qid, query, _ = load_query(args.qid)
    args.qid = qid
    started = time.perf_counter()
    loadavg_start = os.getloadavg()
    cache_root = pathlib.Path(tempfile.mkdtemp(prefix="headrank-speed-"))
    settings = {"threads": args.threads, "qid": qid, "max_passage_tokens": args.max_passage_tokens,
                "mem_budget_gib": args.mem_budget_gib, "mem_margin": args.mem_margin, "warmup": args.warmup,
                "sizes": args.sizes, "cold_check": args.cold_check}
    models, runs = {}, {}
    try:
        for model in args.models:
            cache = cache_root / model
            print(f"== {model}: loading, saving a copy", file=sys.stderr, flush=True)
            info = in_fresh_process(job_prepare, model, str(cache), settings)
            models[model] = info
            if "error" in info:
                print(f"{model}: {info['error']}\n{info.get('traceback', '')}", file=sys.stderr)
                continue
            for n in args.sizes:
                for rep in range(args.reps):
                    shift = rep % len(args.variants)
                    for v in args.variants[shift:] + args.variants[:shift]:
                        done = runs.setdefault((model, n, v), [])
                        if done and "skipped" in done[0]:
                            continue  # (c) over the memory budget: the estimate does not change
                        result = in_fresh_process(job_measure, model, str(cache), n, v, settings)
                        done.append(result)
                        print(f"[{model} n={n} rep {rep + 1}/{args.reps} ({v})] " + (
                            result.get("skipped") or result.get("error") or
                            f"{result['wall_s']:.2f} s wall, {result['cpu_s']:.2f} s cpu, "
                            f"+{fmt(result.get('peak_increase_mib'), 0)} MiB peak, load {result['loadavg'][0]:.1f}"),
                            file=sys.stderr, flush=True)
            shutil.rmtree(cache, ignore_errors=True)
    finally:
        shutil.rmtree(cache_root, ignore_errors=True)
    rows = build_rows(models, runs, args.sizes, args.variants)
    ratios = build_ratios(rows)
    largest = max(args.sizes)
    notes = report_notes(args.max_passage_tokens, models, rows)
    report = {
        "benchmark": "speed", "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": " ".join(["python", "benchmarks/speed.py"] + sys.argv[1:]),
        "host": {"cpu": cpu_name(), "cpu_count": os.cpu_count(), "python": platform.python_version(),
                 "torch": torch.__version__, "transformers": transformers.__version__,
                 "mem_total_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB, 1)},
        "gpu": "CPU only: the GPU rows are benchmarks/gpu_speed.py (results/gpu_speed.md).",
        "settings": {"malloc_mmap_threshold": os.environ.get("MALLOC_MMAP_THRESHOLD_", "glibc default (dynamic)"),
                     "sizes": args.sizes, "reps": args.reps, "warmup": args.warmup,
                     "cold_check": args.cold_check, "torch_threads": args.threads,
                     "max_passage_tokens": args.max_passage_tokens, "qid": qid, "query": query, "dtype": "float32",
                     "attention": "sdpa (a, b, d), eager (c)", "calibrate": True, "batch_size": 1,
                     "mem_budget_gib": args.mem_budget_gib, "mem_margin": args.mem_margin, "quick": args.quick},
        "loadavg_start": [round(x, 2) for x in loadavg_start], "loadavg_end": [round(x, 2) for x in os.getloadavg()],
        "elapsed_s": None, "models": models, "rows": rows, "ratios": ratios,
        "runs_raw": {f"{m}|{n}|{v}": r for (m, n, v), r in runs.items()},
        "targets": assess_targets(ratios, rows, largest), "notes": notes,
    }
    report["elapsed_s"] = round(time.perf_counter() - started, 1)
    out_dir = pathlib.Path(args.out_dir) if args.out_dir else (None if args.quick else RESULTS)
    text = write_report(report, out_dir)
    print(text)
    print(f"\n(elapsed {report['elapsed_s']:.0f} s)")


def render(path: pathlib.Path, out_dir, supplements=()) -> None:
    """Recompute rows, ratios and targets from a stored report's raw runs and write the report again.

    ``supplements``: other speed.json files (e.g. a run with other settings) whose medians and ratios are attached.
    """
    report = json.loads(path.read_text())
    settings = report["settings"]
    runs = {}
    for key, results in report["runs_raw"].items():
        model, n, v = key.split("|")
        for result in results:  # reports written before the skip text was corrected: rebuild it from its numbers
            if "skipped" in result and "eager_need_with_margin_gib" not in result and "eager_need_gib" in result:
                eager = report["models"][model]["sizes"][n]["estimates"]["eager_bytes"] / GIB
                with_margin = result["eager_need_gib"]
                loaded = with_margin - eager * settings["mem_margin"]
                result["eager_need_with_margin_gib"], result["eager_need_gib"] = with_margin, eager + loaded
                result["skipped"] = oom_text(eager + loaded, with_margin, settings["mem_margin"],
                                              settings["mem_budget_gib"])
        runs[(model, int(n), v)] = results
    variants = sorted({v for _, _, v in runs}, key=VARIANTS.index)
    report["rows"] = build_rows(report["models"], runs, settings["sizes"], variants)
    report["ratios"] = build_ratios(report["rows"])
    report["targets"] = assess_targets(report["ratios"], report["rows"], max(settings["sizes"]))
    report["notes"] = report_notes(settings["max_passage_tokens"], report["models"], report["rows"])
    report["runs_raw"] = {f"{m}|{n}|{v}": r for (m, n, v), r in runs.items()}
    report["rendered_again"] = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    if supplements:
        report["supplements"] = []
        for extra in supplements:
            other = json.loads(pathlib.Path(extra).read_text())
            report["supplements"].append({key: other.get(key) for key in (
                "command", "date", "settings", "loadavg_start", "loadavg_end", "elapsed_s", "rows", "ratios",
                "runs_raw")})
    print(write_report(report, out_dir or path.parent))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 4 candidates, 1 repetition")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--sizes", nargs="+", type=int, default=None, help="candidate counts (default 20 50 100)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--reps", type=int, default=None, help="timed repetitions per variant (default 3)")
    parser.add_argument("--warmup", type=int, default=0,
                        help="untimed runs of the variant in its process before the measured one (default 0: small "
                             "kernel warm-up ops only, so that the peak memory is the first run's)")
    parser.add_argument("--no-cold-check", dest="cold_check", action="store_false",
                        help="skip timing a first model call against later ones (4 candidates)")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--max-passage-tokens", type=int, default=128)
    parser.add_argument("--qid", default=None, help="DL21 query id (default: the first in candidates.jsonl)")
    parser.add_argument("--mem-budget-gib", type=float, default=16.0,
                        help="skip (c) where the estimated process memory exceeds this")
    parser.add_argument("--mem-margin", type=float, default=1.1, help="safety factor on the (c) estimate")
    parser.add_argument("--render", metavar="JSON",
                        help="rebuild the tables, ratios and targets from the runs stored in a speed.json (no runs)")
    parser.add_argument("--supplement", metavar="JSON", action="append", default=[],
                        help="with --render: attach the medians and ratios of another run's speed.json")
    parser.add_argument("--out-dir", default=None,
                        help=f"where speed.md and speed.json go (default {RESULTS}; --quick writes nothing unless set)")
    args = parser.parse_args(argv)
    if args.sizes is None:
        args.sizes = [4] if args.quick else [20, 50, 100]
    if args.reps is None:
        args.reps = 1 if args.quick else 3
    if args.quick:
        args.cold_check = False
    if args.render:
        render(pathlib.Path(args.render), pathlib.Path(args.out_dir) if args.out_dir else None, args.supplement)
        return
    if not CANDIDATES.exists():
        sys.exit(f"{CANDIDATES} is missing (set HEADRANK_SHARED to the shared folder)")
    orchestrate(args)


if __name__ == "__main__":
    main()
