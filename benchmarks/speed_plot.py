#!/usr/bin/env python
"""Time per query against the number of candidates, HeadRank (a) beside the bare truncated forward pass (d).

Reads the runs stored in one or more ``speed.json`` files (``benchmarks/speed.py``; e.g. one run at 20 and 100
candidates and another at 50 and 200), prints the table, and writes ``speed_scaling.png`` and ``speed_scaling.md``.

    .venv/bin/python benchmarks/speed_plot.py benchmarks/results/speed.json /tmp/more/speed.json
"""
from __future__ import annotations

import argparse
import json
import pathlib
import statistics

import _speed_bench as bench
from _common import RESULTS


def collect(paths) -> dict:
    """{model: {candidates: {variant: (median CPU s, median peak MiB)}}} over every stored run."""
    runs = {}
    for path in paths:
        report = json.loads(pathlib.Path(path).read_text())
        for key, results in report["runs_raw"].items():
            model, n, variant = key.split("|")
            done = [r for r in results if "cpu_s" in r]
            runs.setdefault(model, {}).setdefault(int(n), {}).setdefault(variant, []).extend(done)
    return {model: {n: {v: (statistics.median(r["cpu_s"] for r in rs),
                            statistics.median(r["peak_increase_mib"] for r in rs))
                        for v, rs in by_variant.items() if rs}
                    for n, by_variant in sorted(sizes.items())}
            for model, sizes in runs.items()}


def table(data: dict) -> str:
    lines = ["| model | candidates | (a) HeadRank CPU s | (d) bare forward CPU s | a/d | (a) per candidate ms | "
             "(a) growth from the smallest size | (d) growth |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for model, sizes in data.items():
        first = next(iter(sizes.values()))
        for n, cell in sizes.items():
            a, d = cell.get("a", (None,))[0], cell.get("d", (None,))[0]
            lines.append(f"| {model} | {n} | {_f(a)} | {_f(d)} | {_f(a and d and a / d)} | "
                         f"{_f(a and 1000 * a / n, 0)} | {_f(a and a / first['a'][0])}x | "
                         f"{_f(d and d / first['d'][0])}x |")
    return "\n".join(lines) + "\n"


def _f(x, digits=2):
    return "-" if not x else f"{x:.{digits}f}"


def plot(data: dict, path: pathlib.Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for model, sizes in data.items():
        for variant, style in (("a", "-o"), ("d", "--s")):
            points = [(n, cell[variant][0]) for n, cell in sizes.items() if variant in cell]
            if points:
                ax.plot(*zip(*points), style, label=f"{model} ({variant}) {bench.VARIANT_NAMES[variant]}")
    ax.set_xlabel("candidates in one prompt window")
    ax.set_ylabel("CPU seconds per query (1 thread)")
    ax.set_title("HeadRank against the bare truncated forward pass")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("reports", nargs="+", help="speed.json files")
    parser.add_argument("--out-dir", default=str(RESULTS))
    args = parser.parse_args(argv)
    data = collect(args.reports)
    text = table(data)
    out = pathlib.Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plot(data, out / "speed_scaling.png")
    (out / "speed_scaling.md").write_text("# Time per query against candidates\n\nFrom: " +
                                          ", ".join(f"`{p}`" for p in args.reports) + "\n\n" + text)
    print(text)


if __name__ == "__main__":
    main()
