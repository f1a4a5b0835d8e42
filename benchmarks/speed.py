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
import contextlib
import datetime
import gc
import json
import os
import pathlib
import platform
import resource
import shutil
import statistics
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

SHARED = pathlib.Path(os.environ.get("HEADRANK_SHARED", ROOT.parent / "shared"))
CANDIDATES = SHARED / "data" / "dl21-passage-bm25top100" / "candidates.jsonl"
QWEN3_CONFIG = SHARED / "models" / "qwen3-configs" / "qwen3-0.6b.json"
QWEN3_TOKENIZER = SHARED / "models" / "qwen3-tokenizer"
RESULTS = ROOT / "benchmarks" / "results"

MODELS = ("qwen3-0.6b", "smollm2-135m")
VARIANTS = ("a", "b", "c", "d")
VARIANT_NAMES = {"a": "HeadRank (truncated, calibrated)", "b": "HeadRank full depth", "c": "eager all-layer attention",
                 "d": "bare truncated forward"}
GIB = 1024 ** 3
MIB = 1024 ** 2


# ---- process measurements ---------------------------------------------------------------------------------------
def _status_kib(field: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _reset_peak_rss() -> bool:
    """Set the kernel's peak-RSS mark (VmHWM) to the current RSS; False where the kernel refuses."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def _available_bytes() -> int:
    for line in open("/proc/meminfo"):
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def _cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


# ---- data and models --------------------------------------------------------------------------------------------
def load_query(qid: str | None):
    """(qid, query, passages in BM25 rank order) of one DL21 query (the first of the file by default), followed by
    the other queries' passages for lists longer than 100."""
    rows = {}
    order = []
    with open(CANDIDATES) as handle:
        for line in handle:
            row = json.loads(line)
            if row["qid"] not in rows:
                order.append(row["qid"])
            rows.setdefault(row["qid"], []).append(row)
    qid = qid or order[0]
    ranked = sorted(rows[qid], key=lambda r: r["rank"])
    # DL21 lists hold 100 candidates; longer lists continue with the next queries' candidates (cost depends on the
    # token count, not on what the passages say)
    more = [r["text"] for q in order if q != qid for r in sorted(rows[q], key=lambda r: r["rank"])]
    return qid, ranked[0]["query"], [r["text"] for r in ranked] + more


def load_benchmark_model(name: str, cache: pathlib.Path | None):
    """(model, tokenizer, how) in float32 with SDPA on the CPU.

    The first process loads the model the real way (``load_model`` for SmolLM2, ``from_config`` with seed 0 for the
    Qwen3-0.6B shape) and saves it to ``cache``; measurement processes load that copy (the same weights, memory-mapped, so a
    fresh process starts in a second) and touch every weight before their baseline is taken.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    saved = cache is not None and (cache / "config.json").exists()
    if saved:
        model = AutoModelForCausalLM.from_pretrained(cache, dtype=torch.float32, attn_implementation="sdpa").eval()
        tokenizer = AutoTokenizer.from_pretrained(cache)
        with torch.no_grad():
            for param in model.parameters():
                param.sum()  # fault every weight page in before the baseline
        return model, tokenizer, f"saved copy ({cache})"
    if name == "qwen3-0.6b":
        config = json.loads(QWEN3_CONFIG.read_text())
        config = AutoConfig.for_model(config.pop("model_type"), **config)
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32, attn_implementation="sdpa").eval()
        tokenizer = AutoTokenizer.from_pretrained(QWEN3_TOKENIZER)
        how = "from_config(qwen3-0.6b.json), random weights (seed 0), real Qwen3 tokenizer"
    elif name == "smollm2-135m":
        from pyterrier_headrank.models import load_model
        model, tokenizer = load_model("smollm2-135m", device="cpu", dtype="float32")
        how = "load_model('smollm2-135m'): real SmolLM2-135M-Instruct, Q4_1 GGUF dequantised to float32"
    else:
        raise ValueError(name)
    if cache is not None:
        _save_copy(model, tokenizer, cache)
    return model, tokenizer, how


def _save_copy(model, tokenizer, cache: pathlib.Path) -> None:
    """Weights (safetensors, tied tensors once), config and tokenizer; works for GGUF-loaded models too."""
    import copy

    from safetensors.torch import save_model
    cache.mkdir(parents=True, exist_ok=True)
    config = copy.deepcopy(model.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # dequantised float32 weights: a plain checkpoint
    config.save_pretrained(cache)
    save_model(model, str(cache / "model.safetensors"))
    tokenizer.save_pretrained(cache)


def context_length(model) -> int:
    return int(getattr(model.config, "max_position_embeddings", 0) or 0)


def attention_implementation(model, name: str):
    """Switch every config of the model to attention implementation ``name`` for the duration."""
    from pyterrier_headrank import compat
    return compat.attention_implementation(compat.attention_configs(model), name)


class Bench:
    """One loaded model and one query; ``variant(v, n)`` gives a zero-argument callable that scores ``n`` candidates."""

    def __init__(self, model, tokenizer, query: str, passages, max_passage_tokens: int):
        import torch

        from pyterrier_headrank import HeadRank, compat
        from pyterrier_headrank.attention import AttentionReader, decoder_layers, model_shape
        from pyterrier_headrank.heads import HeadSet
        from pyterrier_headrank.prompt import ListwisePrompt

        self.torch = torch
        self.model, self.tokenizer = model, tokenizer
        self.query, self.passages = query, list(passages)
        self.max_passage_tokens = max_passage_tokens
        self.num_layers, self.num_heads = model_shape(model)
        config = compat.text_config(model.config)
        self.num_kv_heads = getattr(config, "num_key_value_heads", self.num_heads)
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.num_heads
        self.hidden = config.hidden_size
        self.intermediate = getattr(config, "intermediate_size", 4 * config.hidden_size)
        self.heads = HeadSet.middle_layers(self.num_layers, self.num_heads)
        self.stop = self.heads.deepest_layer
        self.base = getattr(model, "base_model", model)
        assert len(decoder_layers(model)) == self.num_layers
        self.reader = AttentionReader(model, pad_token_id=compat.pad_token_id(tokenizer))
        self.prompt = ListwisePrompt(tokenizer, max_passage_tokens=max_passage_tokens)
        self.weights = torch.tensor(self.heads.weights)
        self.window_tokens = min(context_length(model) or 16384, 16384)
        self._HeadRank = HeadRank

    # ---- prompt ----
    def window(self, n: int):
        texts, _ = self.prompt.truncate_passages(self.passages[:n])
        return self.prompt.window(texts, self.prompt.query_part(self.query))

    def headrank(self, n: int):
        ranker = self._HeadRank(self.model, tokenizer=self.tokenizer, batch_size=1,
                                max_passage_tokens=self.max_passage_tokens, max_window_tokens=self.window_tokens,
                                max_window_passages=max(n, 4), verbose=False)
        reader, prompt, heads = ranker.engine()
        plan, windows = ranker.windows(self.query, self.passages[:n])
        if len(windows) != 1:
            raise RuntimeError(f"{n} candidates need {len(windows)} windows with max_window_tokens={self.window_tokens}")
        if windows[0].prefix_ids != self.window(n).prefix_ids or heads != self.heads:
            raise RuntimeError("HeadRank built a different prompt or head set than the benchmark's variants")
        return ranker

    def prompt_tokens(self, n: int) -> int:
        return len(self.window(n))

    # ---- memory estimates (bytes, float32) ----
    def estimate(self, n: int) -> dict:
        L = self.prompt_tokens(n)
        kv_layer = 2 * self.num_kv_heads * self.head_dim * L * 4
        attn_layer = self.num_heads * L * L * 4
        activations = L * (3 * self.intermediate + 6 * self.hidden) * 4
        return {
            "prompt_tokens": L,
            "kv_cache_truncated_bytes": (self.stop + 1) * kv_layer,
            "kv_cache_full_bytes": self.num_layers * kv_layer,
            # all L x L maps kept (output_attentions), plus logits and softmax of the current layer, the 4D mask
            "eager_bytes": self.num_layers * attn_layer + 2 * attn_layer + L * L * 4 + activations,
            "activations_bytes": activations,
        }

    # ---- the four variants ----
    def variant(self, v: int, n: int):
        torch = self.torch
        if v == "a":
            ranker = self.headrank(n)
            lists = [(self.query, self.passages[:n])]
            return lambda: ranker.score_lists(lists)
        if v == "b":
            def full_depth():
                window = self.window(n)
                with torch.inference_mode():
                    readout = self.reader.read([window], self.heads, calibrate=True, truncate=False)
                    return readout.scores(self.weights, calibrate=True).float().cpu().numpy()
            return full_depth
        if v == "c":
            def eager():
                window = self.window(n)
                ids = torch.tensor([window.prefix_ids + window.query.ids])
                with torch.inference_mode(), attention_implementation(self.model, "eager"):
                    out = self.base(input_ids=ids, output_attentions=True, use_cache=False)
                    attentions = out.attentions
                    if attentions is None or len(attentions) != self.num_layers:
                        raise RuntimeError("eager pass returned no per-layer attentions")
                    start = len(window.prefix_ids) + window.query.span[0]
                    end = len(window.prefix_ids) + window.query.span[1]
                    index = torch.full((ids.shape[1],), n, dtype=torch.long)
                    for j, (a, b) in enumerate(window.passage_spans):
                        index[a:b] = j
                    total = torch.zeros(n + 1)
                    for layer in attentions:  # ICR: every head of every layer, mean over the query tokens
                        rows = layer[0, :, start:end].float().mean(1)  # [heads, L]
                        total += torch.zeros(rows.shape[0], n + 1).index_add_(1, index, rows).sum(0)
                    del out, attentions
                return total[:n].numpy()
            return eager
        if v == "d":
            from pyterrier_headrank.attention import StopForward, decoder_layers
            window = self.window(n)
            ids = torch.tensor([window.prefix_ids + window.query.ids])

            def bare():
                with torch.inference_mode(), stop_after(decoder_layers(self.model)[self.stop], StopForward):
                    try:
                        self.base(input_ids=ids, use_cache=False)
                    except StopForward:
                        pass
            return bare
        raise ValueError(v)


@contextlib.contextmanager
def stop_after(module, exception):
    """End the forward passes inside with ``exception`` once ``module`` has run (the bare pass (d) stops here)."""
    def stop(*_):
        raise exception()

    handle = module.register_forward_hook(stop)
    try:
        yield
    finally:
        handle.remove()


def _timed(fn):
    gc.collect()
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def eager_fits(bench: Bench, n: int, budget_bytes: float, margin: float) -> tuple:
    """(fits, estimated process bytes, the same with the safety margin) for variant (c): the estimate of its tensors
    (times ``margin``) plus the current RSS (the loaded model), against the budget and the memory available now."""
    eager, loaded = bench.estimate(n)["eager_bytes"], _status_kib("VmRSS") * 1024
    limit = min(budget_bytes, _available_bytes() - 1 * GIB)
    return eager * margin + loaded <= limit, eager + loaded, eager * margin + loaded


def _warm_kernels(torch) -> None:
    """Start the thread pool and the BLAS, softmax and SDPA kernels with small ops (not the model's shapes)."""
    a = torch.randn(256, 256)
    torch.softmax(a @ a, -1).sum()
    q = torch.randn(1, 2, 64, 32)
    torch.nn.functional.scaled_dot_product_attention(q, q, q, is_causal=True).sum()


# ---- jobs, each run in a fresh process --------------------------------------------------------------------------
def job_prepare(model_name: str, cache: str, settings: dict) -> dict:
    """Load the model the real way, save a copy for the measurement processes, describe the model and prompts."""
    import torch
    torch.set_num_threads(settings["threads"])
    qid, query, passages = load_query(settings["qid"])
    started = time.perf_counter()
    model, tokenizer, how = load_benchmark_model(model_name, pathlib.Path(cache))
    load_s = time.perf_counter() - started
    bench = Bench(model, tokenizer, query, passages, settings["max_passage_tokens"])
    info = {
        "model": model_name, "loaded": how, "load_and_save_s": round(load_s, 1), "torch_threads": torch.get_num_threads(),
        "num_layers": bench.num_layers, "num_heads": bench.num_heads, "num_kv_heads": bench.num_kv_heads,
        "head_dim": bench.head_dim, "context_length": context_length(model), "head_set": repr(bench.heads),
        "stop_layer": bench.stop, "layers_run_truncated": bench.stop + 1, "max_window_tokens": bench.window_tokens,
        "sizes": {},
    }
    for n in settings["sizes"]:
        bench.headrank(n)  # raises unless HeadRank puts all n candidates in one window, with the benchmark's prompt
        prompt_s = []
        for _ in range(5):
            t = time.perf_counter()
            bench.window(n)
            prompt_s.append(time.perf_counter() - t)
        info["sizes"][str(n)] = {"estimates": bench.estimate(n), "prompt_build_s": statistics.median(prompt_s)}
    if settings.get("cold_check"):  # first call in a fresh process against the next ones, at a tiny size
        _warm_kernels(torch)
        check = {}
        for v in ("a", "d"):
            fn = bench.variant(v, 4)
            check[v] = [_timed(fn)[0] for _ in range(3)]
        info["cold_check_4_candidates_s"] = check
    return info


def job_measure(model_name: str, cache: str, n: int, v: str, settings: dict) -> dict:
    """One run of variant ``v`` at ``n`` candidates: wall and CPU time, and peak RSS over the loaded model."""
    import torch
    torch.set_num_threads(settings["threads"])
    qid, query, passages = load_query(settings["qid"])
    model, tokenizer, _ = load_benchmark_model(model_name, pathlib.Path(cache))
    bench = Bench(model, tokenizer, query, passages, settings["max_passage_tokens"])
    out = {"model": model_name, "n": n, "variant": v, "torch_threads": torch.get_num_threads()}
    if v == "c":
        fits, need, with_margin = eager_fits(bench, n, settings["mem_budget_gib"] * GIB, settings["mem_margin"])
        out["eager_need_gib"], out["eager_need_with_margin_gib"] = need / GIB, with_margin / GIB
        if not fits:
            out["skipped"] = _oom_text(need / GIB, with_margin / GIB, settings["mem_margin"], settings["mem_budget_gib"])
            return out
    fn = bench.variant(v, n)
    _warm_kernels(torch)
    for _ in range(settings["warmup"]):
        fn()
    gc.collect()
    out["loadavg"] = os.getloadavg()
    rss_before = _status_kib("VmRSS")
    ru_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out["hwm_reset"] = _reset_peak_rss()
    out["wall_s"], out["cpu_s"] = _timed(fn)
    hwm_after = _status_kib("VmHWM")
    ru_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out.update(baseline_rss_mib=rss_before / 1024, peak_rss_mib=hwm_after / 1024,
               peak_increase_mib=(hwm_after - rss_before) / 1024 if out["hwm_reset"] else None,
               ru_maxrss_before_mib=ru_before / 1024, ru_maxrss_after_mib=ru_after / 1024,
               ru_maxrss_increase_mib=(ru_after - ru_before) / 1024)
    return out


def _oom_text(need_gib: float, with_margin_gib: float, margin: float, budget_gib: float) -> str:
    return (f"OOM-estimated: needs {need_gib:.1f} GiB ({with_margin_gib:.1f} GiB with a x{margin:g} safety margin on "
            f"the attention maps; loaded model included), over the {budget_gib:g} GiB budget")


_CONTEXT = None


def _context():
    """A forkserver that has imported torch and transformers (and run no torch op): cheap, clean fresh processes."""
    global _CONTEXT
    if _CONTEXT is None:
        import multiprocessing
        _CONTEXT = multiprocessing.get_context("forkserver")
        _CONTEXT.set_forkserver_preload(["torch", "transformers", "safetensors.torch"])
    return _CONTEXT


def _child(connection, fn, args) -> None:
    try:
        connection.send(fn(*args))
    except BaseException as err:  # report, do not hang the parent
        import traceback
        connection.send({"error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()[-3000:]})
    finally:
        connection.close()


def in_fresh_process(fn, *args) -> dict:
    context = _context()
    receive, send = context.Pipe(duplex=False)
    process = context.Process(target=_child, args=(send, fn, args))
    process.start()
    send.close()
    try:
        result = receive.recv()
    except EOFError:
        result = None
    process.join()
    if result is None:
        result = {"error": f"process died with exit code {process.exitcode} (killed for memory?)"}
    return result


# ---- report -----------------------------------------------------------------------------------------------------
def _median(values):
    return statistics.median(values) if values else None


def _ratio(x, y):
    return x / y if x is not None and y not in (None, 0) else None


def build_rows(models: dict, runs: dict, sizes, variants) -> list:
    rows = []
    for model, info in models.items():
        if "error" in info:
            continue
        for n in sizes:
            estimates = info["sizes"][str(n)]["estimates"]
            for v in variants:
                done = [r for r in runs.get((model, n, v), []) if "wall_s" in r]
                failed = [r for r in runs.get((model, n, v), []) if "wall_s" not in r]
                walls = [r["wall_s"] for r in done]
                peaks = [r["peak_increase_mib"] for r in done if r.get("peak_increase_mib") is not None]
                rows.append({
                    "model": model, "candidates": n, "prompt_tokens": estimates["prompt_tokens"], "variant": v,
                    "variant_name": VARIANT_NAMES[v], "runs": len(done),
                    "time_s_median": _median(walls), "time_s_all": walls,
                    "cpu_s_median": _median([r["cpu_s"] for r in done]), "cpu_s_all": [r["cpu_s"] for r in done],
                    "peak_mib": _median(peaks), "peak_mib_all": peaks,
                    "ru_maxrss_increase_mib": _median([r["ru_maxrss_increase_mib"] for r in done]),
                    "baseline_rss_mib": _median([r["baseline_rss_mib"] for r in done]),
                    "loadavg_1min": [r["loadavg"][0] for r in done],
                    "skipped": (failed[0].get("skipped") or failed[0].get("error")) if failed and not done else None,
                    "estimated_eager_gib": estimates["eager_bytes"] / GIB if v == "c" else None,
                })
    return rows


def build_ratios(rows: list) -> list:
    table = {(r["model"], r["candidates"], r["variant"]): r for r in rows}
    ratios = []
    for model, n in sorted({(r["model"], r["candidates"]) for r in rows}, key=lambda k: (MODELS.index(k[0]) if k[0] in
                                                                                         MODELS else 9, k[1])):
        get = lambda v, key, model=model, n=n: table.get((model, n, v), {}).get(key)  # noqa: E731
        entry = {"model": model, "candidates": n}
        for name, (x, y) in {"a/b": ("a", "b"), "c/a": ("c", "a"), "a/d": ("a", "d")}.items():
            entry[f"{name} time"] = _ratio(get(x, "time_s_median"), get(y, "time_s_median"))
            entry[f"{name} memory"] = _ratio(get(x, "peak_mib"), get(y, "peak_mib"))
            entry[f"{name} cpu time"] = _ratio(get(x, "cpu_s_median"), get(y, "cpu_s_median"))
            xs, ys = get(x, "time_s_all") or [], get(y, "time_s_all") or []
            paired = [a / b for a, b in zip(xs, ys)] if len(xs) == len(ys) and xs else []
            entry[f"{name} time paired"] = _median(paired)  # median over repetitions of the same-repetition ratio
            entry[f"{name} time paired all"] = paired
        if get("c", "peak_mib") is None and get("c", "estimated_eager_gib") and get("a", "peak_mib"):
            entry["c/a memory (estimated c)"] = get("c", "estimated_eager_gib") * 1024 / get("a", "peak_mib")
        ratios.append(entry)
    return ratios


def _fmt(x, digits=2, suffix=""):
    return "-" if x is None else f"{x:.{digits}f}{suffix}"


def write_report(report: dict, out_dir) -> str:
    rows, ratios = report["rows"], report["ratios"]
    table = {(r["model"], r["candidates"], r["variant"]): r for r in rows}
    lines = [
        "# HeadRank speed and memory",
        "",
        f"Generated by `{report['command']}` on {report['date']}" + (
            f"; tables rebuilt from the stored runs with `--render` on {report['rendered_again']}."
            if report.get("rendered_again") else "."),
        "",
        f"- Machine: {report['host']['cpu']}, {report['host']['cpu_count']} CPU cores shared with other jobs "
        f"(timings are noisy), torch {report['host']['torch']} CPU, transformers {report['host']['transformers']}, "
        f"`torch.set_num_threads({report['settings']['torch_threads']})`, float32.",
        f"- GPU: {report['gpu']}",
        f"- Load average (1, 5, 15 min) at start {report['loadavg_start']}, at end {report['loadavg_end']}; "
        "every run's 1-minute load is in the JSON (`loadavg_1min`). The whole benchmark took "
        f"{report['elapsed_s'] / 60:.0f} minutes.",
        f"- Query: DL21 qid {report['settings']['qid']} (\"{report['settings']['query']}\"), its BM25 top "
        f"{', '.join(map(str, report['settings']['sizes']))}, passages cut to {report['settings']['max_passage_tokens']}"
        " tokens, all candidates in one prompt window (passages first, query last).",
        f"- Each cell: median over {report['settings']['reps']} repetitions; every repetition runs each variant once, "
        "interleaved (rotating order), each run in a fresh process that loads the model, builds the inputs, starts the "
        "kernels with small ops and then runs the variant once (one query per call). Time is wall clock; CPU time is "
        "in the JSON and in the ratio table.",
        "- Peak memory: peak RSS during that run minus RSS just before it "
        "(model loaded and inputs built; kernel peak mark reset via /proc/self/clear_refs); median over the "
        "repetitions. `ru_maxrss` deltas are in the JSON.",
        "",
    ]
    for model, info in report["models"].items():
        if "error" in info:
            lines.append(f"- **{model}**: loading failed: {info['error']}")
            continue
        lines.append(f"- **{model}**: {info['loaded']}; {info['num_layers']} layers x {info['num_heads']} heads "
                     f"({info['num_kv_heads']} KV heads); zero-shot head set {info['head_set']}: (a), (d) run "
                     f"{info['layers_run_truncated']} of {info['num_layers']} layers; context {info['context_length']}"
                     f" tokens, max_window_tokens={info['max_window_tokens']}.")
    lines += ["", "Variants: " + "; ".join(f"({v}) {VARIANT_NAMES[v]}" for v in VARIANTS) + ".", "",
              "| model | cands | tokens | (a) s | (b) s | (c) s | (d) s | (a) MiB | (b) MiB | (c) MiB | (d) MiB |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    notes = []
    for entry in ratios:
        model, n = entry["model"], entry["candidates"]
        cells = [model, str(n), str(table[(model, n, "a")]["prompt_tokens"]) if (model, n, "a") in table else "-"]
        for key, digits in (("time_s_median", 2), ("peak_mib", 0)):
            for v in VARIANTS:
                r = table.get((model, n, v))
                if r is None:
                    cells.append("n/a")
                elif r[key] is None and r["skipped"]:
                    cells.append("OOM-est." if "OOM" in r["skipped"] else "failed")
                    if key == "time_s_median":
                        notes.append(f"{model}, {n} candidates, ({v}): {r['skipped']}")
                else:
                    cells.append(_fmt(r[key], digits))
        lines.append("| " + " | ".join(cells) + " |")
    if notes:
        lines += [""] + [f"- {note}" for note in notes]
    lines += ["", "Ratios (time: median wall clock; cpu: median process CPU time, less sensitive to other jobs on the "
              "machine; mem: peak RSS increase):", "",
              "| model | cands | a/b time | a/b cpu | a/b mem | c/a time | c/a cpu | c/a mem | a/d time | a/d paired | "
              "a/d cpu | a/d mem |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for entry in ratios:
        ca_mem = _fmt(entry["c/a memory"])
        if entry["c/a memory"] is None and entry.get("c/a memory (estimated c)"):
            ca_mem = f"~{entry['c/a memory (estimated c)']:.0f} (c estimated)"
        lines.append(f"| {entry['model']} | {entry['candidates']} | {_fmt(entry['a/b time'])} | "
                     f"{_fmt(entry['a/b cpu time'])} | {_fmt(entry['a/b memory'])} | {_fmt(entry['c/a time'])} | "
                     f"{_fmt(entry['c/a cpu time'])} | {ca_mem} | {_fmt(entry['a/d time'])} | "
                     f"{_fmt(entry['a/d time paired'])} | {_fmt(entry['a/d cpu time'])} | {_fmt(entry['a/d memory'])} |")
    lines += ["", "a/d paired: median over repetitions of (a)/(d) within the same repetition (the two runs are minutes "
              "apart at most, so a change in the machine's load between repetitions cancels)."]
    lines += ["", "Every run (wall-clock seconds, in repetition order; peak MiB):", "",
              "| model | cands | (a) | (b) | (c) | (d) |", "|---|---:|---|---|---|---|"]
    for entry in ratios:
        model, n = entry["model"], entry["candidates"]
        cells = []
        for v in VARIANTS:
            r = table.get((model, n, v))
            if r is None or not r["time_s_all"]:
                cells.append("-")
            else:
                cells.append(", ".join(f"{t:.1f}" for t in r["time_s_all"]) + " s; " +
                             ", ".join(f"{m:.0f}" for m in r["peak_mib_all"]) + " MiB")
        lines.append(f"| {model} | {n} | " + " | ".join(cells) + " |")
    for extra in report.get("supplements") or []:
        settings = extra["settings"]
        loads = [x for r in extra["rows"] for x in r.get("loadavg_1min", [])]
        lines += ["", f"Supplement: `{extra['command']}` on {extra['date']} (torch threads {settings['torch_threads']}, "
                  f"{settings['reps']} interleaved repetitions in fresh processes as above, 1-minute load "
                  f"{min(loads):.1f} to {max(loads):.1f}):", "",
                  "| model | cands | (a) s | (d) s | (a) cpu s | (d) cpu s | (a) MiB | (d) MiB | a/d time | a/d paired | "
                  "a/d cpu | a/d mem |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        got = {(r["model"], r["candidates"], r["variant"]): r for r in extra["rows"]}
        for entry in extra["ratios"]:
            model, n = entry["model"], entry["candidates"]
            a, d = got.get((model, n, "a"), {}), got.get((model, n, "d"), {})
            lines.append(f"| {model} | {n} | {_fmt(a.get('time_s_median'))} | {_fmt(d.get('time_s_median'))} | "
                         f"{_fmt(a.get('cpu_s_median'))} | {_fmt(d.get('cpu_s_median'))} | "
                         f"{_fmt(a.get('peak_mib'), 0)} | {_fmt(d.get('peak_mib'), 0)} | {_fmt(entry['a/d time'])} | "
                         f"{_fmt(entry.get('a/d time paired'))} | {_fmt(entry['a/d cpu time'])} | "
                         f"{_fmt(entry['a/d memory'])} |")
    lines += ["", "Targets:", ""] + [f"- {line}" for line in report["targets"]]
    lines += ["", "Notes:", ""] + [f"- {line}" for line in report["notes"]]
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "speed.md").write_text("\n".join(lines) + "\n")
        (out_dir / "speed.json").write_text(json.dumps(report, indent=1, default=float) + "\n")
    return "\n".join(lines)


#: Targets of (a) against (d), the bare forward pass truncated after the same layer: CPU time and peak memory.
TARGET_TIME, TARGET_MEMORY, TARGET_SIZES = 1.0, 1.5, (20, 100)


def assess_targets(ratios: list, rows: list, largest: int) -> list:
    """One line per model and target size: (a)/(d) in CPU time (<= 1.0) and in peak memory (<= 1.5), met or not."""
    lines = []
    for ratio in ratios:
        if ratio["candidates"] not in TARGET_SIZES:
            continue
        cpu, memory = ratio["a/d cpu time"], ratio["a/d memory"]
        lines.append(f"{ratio['model']}, {ratio['candidates']} candidates: a/d CPU time {_fmt(cpu)} "
                     f"(<= {TARGET_TIME}: {_verdict(cpu, TARGET_TIME)}; wall clock {_fmt(ratio['a/d time'])}, "
                     f"paired {_fmt(ratio['a/d time paired'])}), a/d peak memory {_fmt(memory)} "
                     f"(<= {TARGET_MEMORY}: {_verdict(memory, TARGET_MEMORY)})")
    return lines


def _verdict(value, limit: float) -> str:
    return "not measured" if value is None else "met" if round(value, 2) <= limit else "NOT met"


def report_notes(max_passage_tokens: int, models: dict, rows: list) -> list:
    loads = [x for r in rows for x in r.get("loadavg_1min", [])]
    load = f"1-minute load {min(loads):.1f} to {max(loads):.1f} during the runs" if loads else "load in the JSON"
    notes = [
        "(c) is one eager pass over the full prompt with the query (ICR reads every head of every layer); ICR's "
        "calibration needs a second identical pass, so c/a in time is a lower bound for calibrated ICR. (c) runs on "
        "the base decoder without the LM head; a plain CausalLM call would add L x vocab float32 logits. Where (c) "
        "is OOM-estimated, 'c/a mem ~N (c estimated)' divides the estimated size of its tensors (all L x L maps of "
        "every layer, one layer's logits and softmax, the 4D mask, activations) by the measured peak of (a).",
        "(a) is the public HeadRank.score_lists path (prompt building included, 'prompt_build_s' in the JSON: "
        "under 0.1 s); (b) the same reader with truncate=False; (d) has no prompt building, no KV cache, no "
        "calibration rows and no reading.",
        "(a) and (b) keep no KV cache: one pass over passages, query part and calibration part (side by side at the "
        "same positions, masked from each other); (a) ends inside the deepest selected layer's attention, (d) after "
        "that layer.",
        "Peak memory is peak RSS, so it includes what glibc's allocator keeps: with its default dynamic mmap "
        "threshold, freed mid-size tensors stay in the heap and RSS depends on the order of allocations, not only "
        "on the tensors alive. 'malloc_mmap_threshold' in the JSON says which allocator setting a run used.",
        f"The {os.cpu_count()} cores were shared with other jobs ({load}): a run that has to wait for the "
        "cores takes longer in wall clock, and with 2 threads every small op can wait for a scheduler slice, which "
        "costs (a) (a few hundred more small ops: the suffix SDPA calls and the reading) more than (d). Read "
        "wall-clock ratios next to the paired and CPU-time ratios; the CPU time also counts threads spinning while "
        "they wait.",
        "Qwen3-0.6B has random weights built from its config: cost equals the real model's; its scores mean nothing.",
        "Every measurement runs in a fresh process (forked from a server that has only imported torch and "
        "transformers), which loads a saved copy of the weights (memory-mapped safetensors, every page touched before "
        "the baseline): building the random Qwen3 model or dequantising SmolLM2's GGUF takes 15-25 s, once per model.",
        "Instead of warm-up runs of the model, each process first runs small matmul, softmax and SDPA ops (thread "
        "pool, BLAS and kernel start-up), then the measured run; 'cold_check_4_candidates_s' in the JSON times a first "
        "model call and two more in one process at 4 candidates, to show what a warm-up would have removed. The variants "
        "are interleaved: each repetition runs every variant once, in an order that rotates between repetitions.",
    ]
    for model, info in models.items():
        if model == "smollm2-135m" and "context_length" in info:
            notes.append(f"SmolLM2's context is {info['context_length']} tokens; 100 candidates at "
                         f"{max_passage_tokens} tokens each fit in it (DL21 passages are mostly shorter than "
                         "128 tokens), so no passage was cut further and there is one window at every size.")
    return notes


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
                            f"+{_fmt(result.get('peak_increase_mib'), 0)} MiB peak, load {result['loadavg'][0]:.1f}"),
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
        "host": {"cpu": _cpu_name(), "cpu_count": os.cpu_count(), "python": platform.python_version(),
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
                result["skipped"] = _oom_text(eager + loaded, with_margin, settings["mem_margin"],
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


def run_report(parser: argparse.ArgumentParser, run, write, argv=None) -> None:
    """For the other benchmark scripts: parse the command line, check the shared candidates are there, run, then
    write and print the report (``write(report, out_dir)`` returns its text)."""
    args = parser.parse_args(argv)
    if not CANDIDATES.exists():
        sys.exit(f"{CANDIDATES} is missing (set HEADRANK_SHARED to the shared folder)")
    print(write(run(args), pathlib.Path(args.out_dir)))


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
