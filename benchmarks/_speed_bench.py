"""The speed benchmark's models and measured variants: the DL21 query, the model zoo (saved copies of the weights), the
four variants of one pass (:class:`Bench`) and the jobs that :mod:`speed` runs in fresh processes."""
from __future__ import annotations

import contextlib
import gc
import json
import os
import pathlib
import resource
import statistics
import time

from _common import quiet_offline_environment
from _fresh_process import available_bytes, reset_peak_rss, status_kib

quiet_offline_environment()
SHARED = pathlib.Path(os.environ["HEADRANK_SHARED"])  # _common points it at ../shared unless set
CANDIDATES = SHARED / "data" / "dl21-passage-bm25top100" / "candidates.jsonl"
QWEN3_CONFIG = SHARED / "models" / "qwen3-configs" / "qwen3-0.6b.json"
QWEN3_TOKENIZER = SHARED / "models" / "qwen3-tokenizer"

MODELS = ("qwen3-0.6b", "smollm2-135m")
VARIANTS = ("a", "b", "c", "d")
VARIANT_NAMES = {"a": "HeadRank (truncated, calibrated)", "b": "HeadRank full depth", "c": "eager all-layer attention",
                 "d": "bare truncated forward"}
GIB = 1024 ** 3
MIB = 1024 ** 2


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
        self.heads = HeadSet.training_free(self.num_layers, self.num_heads)  # what HeadRank(model) reads
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
    eager, loaded = bench.estimate(n)["eager_bytes"], status_kib("VmRSS") * 1024
    limit = min(budget_bytes, available_bytes() - 1 * GIB)
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
            out["skipped"] = oom_text(need / GIB, with_margin / GIB, settings["mem_margin"], settings["mem_budget_gib"])
            return out
    fn = bench.variant(v, n)
    _warm_kernels(torch)
    for _ in range(settings["warmup"]):
        fn()
    gc.collect()
    out["loadavg"] = os.getloadavg()
    rss_before = status_kib("VmRSS")
    ru_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out["hwm_reset"] = reset_peak_rss()
    out["wall_s"], out["cpu_s"] = _timed(fn)
    hwm_after = status_kib("VmHWM")
    ru_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out.update(baseline_rss_mib=rss_before / 1024, peak_rss_mib=hwm_after / 1024,
               peak_increase_mib=(hwm_after - rss_before) / 1024 if out["hwm_reset"] else None,
               ru_maxrss_before_mib=ru_before / 1024, ru_maxrss_after_mib=ru_after / 1024,
               ru_maxrss_increase_mib=(ru_after - ru_before) / 1024)
    return out


def oom_text(need_gib: float, with_margin_gib: float, margin: float, budget_gib: float) -> str:
    return (f"OOM-estimated: needs {need_gib:.1f} GiB ({with_margin_gib:.1f} GiB with a x{margin:g} safety margin on "
            f"the attention maps; loaded model included), over the {budget_gib:g} GiB budget")

