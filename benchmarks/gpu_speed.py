#!/usr/bin/env python
"""HeadRank on a GPU: ms per query, peak memory and prompt tokens per second for the Qwen3 shapes, beside
RankGPT-style generation with the same model.

For each model (random weights of the real Qwen3-0.6B, 1.7B and 4B shapes from ``../shared/models/qwen3-configs``,
bfloat16: cost equals the real model's, scores mean nothing) and candidate count (DL21 BM25 lists, 128-token
passages, one window), HeadRank scores ``--queries`` lists in one ``score_lists`` call, its batch size planned from
the free memory. RankGPT-style: one greedy generation over the same listwise prompt, forced to write as many tokens
as a full permutation of the candidates takes ("[3] > [1] > ..."), one query at a time. Targets (issue 9): Qwen3-4B
at 100 candidates <= 250 ms/query, and >= 20x faster than RankGPT-style there.

Without a GPU the results file says so and nothing is estimated.

    .venv/bin/python benchmarks/gpu_speed.py                          # on a machine with CUDA
    .venv/bin/python benchmarks/gpu_speed.py --smoke --device cpu    # a tiny model on the CPU: checks the code path
"""
from __future__ import annotations

import argparse
import datetime
import json
import pathlib
import sys
import time

import _speed_bench as bench
from _common import RESULTS
from _speed_report import run_report

MODELS = ("qwen3-0.6b", "qwen3-1.7b", "qwen3-4b")
CONFIGS = bench.SHARED / "models" / "qwen3-configs"
TARGET_MS, TARGET_SPEED_UP = 250.0, 20.0


def build(name: str, device, dtype, smoke: bool):
    """A random-weight model of ``name``'s shape (a 2-layer cut of it with ``smoke``) and the real Qwen3 tokenizer."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    config = json.loads((CONFIGS / f"{name}.json").read_text())
    if smoke:
        config.update(num_hidden_layers=2, hidden_size=64, intermediate_size=128, num_attention_heads=4,
                      num_key_value_heads=2, head_dim=16)
    config = AutoConfig.for_model(config.pop("model_type"), **config)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation="sdpa").to(device).eval()
    return model, AutoTokenizer.from_pretrained(bench.QWEN3_TOKENIZER)


def lists_for(n: int, queries: int):
    """``queries`` DL21 queries with their BM25 top ``n`` passages."""
    rows = {}
    with open(bench.CANDIDATES) as handle:
        for line in handle:
            row = json.loads(line)
            rows.setdefault(row["qid"], []).append(row)
    chosen = list(rows)[:queries]
    return [(rows[q][0]["query"], [r["text"] for r in sorted(rows[q], key=lambda r: r["rank"])[:n]]) for q in chosen]


def time_headrank(model, tokenizer, lists, device) -> dict:
    import torch

    from pyterrier_headrank import HeadRank

    ranker = HeadRank(model, tokenizer=tokenizer, max_passage_tokens=128, max_window_tokens=16384,
                      max_window_passages=max(len(p) for _, p in lists))
    ranker.score_lists(lists[:1])  # kernels, allocator
    tokens = sum(len(w) for q, p in lists for w in ranker.windows(q, p)[1])
    _sync(device)
    torch.cuda.reset_peak_memory_stats() if device.type == "cuda" else None
    base = torch.cuda.memory_allocated() if device.type == "cuda" else 0
    start = time.perf_counter()
    ranker.score_lists(lists)
    _sync(device)
    seconds = time.perf_counter() - start
    peak = (torch.cuda.max_memory_allocated() - base) / 2 ** 20 if device.type == "cuda" else None
    return {"ms_per_query": 1000 * seconds / len(lists), "peak_mib": peak, "prompt_tokens_per_s": tokens / seconds}


def time_rankgpt_style(model, tokenizer, lists, device) -> dict:
    """Greedy generation of a full permutation's worth of tokens over each list's listwise prompt."""
    import torch

    from pyterrier_headrank.prompt import ListwisePrompt

    prompt = ListwisePrompt(tokenizer, max_passage_tokens=128)
    total, generated = 0.0, 0
    for query, passages in lists[:2]:
        window = prompt.window(prompt.truncate_passages(passages)[0], prompt.query_part(query))
        ids = torch.tensor([window.prefix_ids + window.query.ids], device=device)
        permutation = " > ".join(f"[{i + 1}]" for i in range(len(passages)))
        new = len(tokenizer(permutation, add_special_tokens=False)["input_ids"])
        _sync(device)
        start = time.perf_counter()
        with torch.inference_mode():
            model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=new,
                           min_new_tokens=new, pad_token_id=tokenizer.eos_token_id)
        _sync(device)
        total += time.perf_counter() - start
        generated += new
    return {"ms_per_query": 1000 * total / min(2, len(lists)), "tokens_generated_per_query": generated / min(2, len(lists))}


def _sync(device) -> None:
    import torch
    if device.type == "cuda":
        torch.cuda.synchronize()


def run(args) -> dict:
    import torch

    device = torch.device(args.device)
    report = {"benchmark": "gpu_speed", "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
              "command": " ".join(["python", "benchmarks/gpu_speed.py"] + sys.argv[1:]), "rows": [],
              "smoke": args.smoke}
    if device.type == "cuda" and not torch.cuda.is_available():
        report["no_gpu"] = "no GPU in this session (torch.cuda.is_available() is False): nothing measured"
        return report
    report["device"] = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    for name in args.models:
        model, tokenizer = build(name, device, dtype, args.smoke)
        for n in args.sizes:
            lists = lists_for(n, args.queries)
            row = {"model": name, "candidates": n, "queries": len(lists), "dtype": str(dtype).replace("torch.", ""),
                   "headrank": time_headrank(model, tokenizer, lists, device),
                   "rankgpt_style": time_rankgpt_style(model, tokenizer, lists, device)}
            row["speed_up"] = row["rankgpt_style"]["ms_per_query"] / row["headrank"]["ms_per_query"]
            report["rows"].append(row)
            print(f"[{name} n={n}] HeadRank {row['headrank']['ms_per_query']:.0f} ms/query, RankGPT-style "
                  f"{row['rankgpt_style']['ms_per_query']:.0f} ms/query", file=sys.stderr, flush=True)
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return report


def write(report: dict, out_dir: pathlib.Path) -> str:
    lines = ["# HeadRank on a GPU", "", f"Generated by `{report['command']}` on {report['date']}."]
    if "no_gpu" in report:
        lines += ["", f"**{report['no_gpu']}.** The GPU rows (Qwen3-0.6B, 1.7B, 4B in bf16 at 20, 50, 100 "
                      "candidates, beside RankGPT-style generation) are not measured; nothing is estimated."]
    else:
        lines += [f"Device: {report['device']}{' (smoke run: 2-layer cuts of the shapes)' if report['smoke'] else ''}.",
                  "", "| model | candidates | HeadRank ms/query | peak MiB | prompt tokens/s | RankGPT-style ms/query | "
                  "speed-up |", "|---|---:|---:|---:|---:|---:|---:|"]
        for r in report["rows"]:
            h, g = r["headrank"], r["rankgpt_style"]
            peak = "-" if h["peak_mib"] is None else f"{h['peak_mib']:.0f}"
            lines.append(f"| {r['model']} | {r['candidates']} | {h['ms_per_query']:.0f} | {peak} | "
                         f"{h['prompt_tokens_per_s']:.0f} | {g['ms_per_query']:.0f} | {r['speed_up']:.1f}x |")
        lines += ["", "Targets: " + "; ".join(_targets(report["rows"]))]
    text = "\n".join(lines) + "\n"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "gpu_speed.md").write_text(text)
    (out_dir / "gpu_speed.json").write_text(json.dumps(report, indent=1) + "\n")
    return text


def _targets(rows) -> list:
    at = [r for r in rows if r["model"] == "qwen3-4b" and r["candidates"] == 100]
    if not at:
        return ["not measured (no Qwen3-4B row at 100 candidates)"]
    ms, up = at[0]["headrank"]["ms_per_query"], at[0]["speed_up"]
    return [f"Qwen3-4B at 100 candidates {ms:.0f} ms/query (<= {TARGET_MS:.0f}: {'met' if ms <= TARGET_MS else 'NOT met'})",
            f"{up:.1f}x RankGPT-style (>= {TARGET_SPEED_UP:.0f}x: {'met' if up >= TARGET_SPEED_UP else 'NOT met'})"]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--sizes", nargs="+", type=int, default=[20, 50, 100])
    parser.add_argument("--queries", type=int, default=8, help="DL21 queries per cell (scored in one call)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--smoke", action="store_true", help="2-layer cuts of the shapes (checks the code path)")
    parser.add_argument("--out-dir", default=str(RESULTS))
    run_report(parser, run, write, argv)


if __name__ == "__main__":
    main()
