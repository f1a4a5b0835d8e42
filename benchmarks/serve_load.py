"""Load test of ``headrank serve``: N concurrent clients for a fixed time against the real server on loopback.

The server runs in its own process (``python -m pyterrier_headrank.integrations.cli serve``, as a user starts it),
so that its memory is its own and the clients do not share its interpreter. Each client sends Cohere-shape requests
(``POST /v1/rerank``, ``top_n`` 10) one after another, cycling through real SciFact test queries with their BM25
top-``depth`` passages (the shared folder's Pyserini run), until the time is up; requests still in flight then are
waited for and counted. Reported per client count: requests answered, throughput, latency percentiles (client-side,
from sending to the full answer), errors (any status but 200, or no answer), rankings that differ from the first
answer to the same list (there should be none), the server's resident memory (peak over the run, sampled), and the
machine's 1-minute load average before and after (other processes on the same cores slow the server: read the
throughput with it).

    python benchmarks/serve_load.py                       # 4 and 16 clients, 60 s each, SmolLM2, top-20
    python benchmarks/serve_load.py --clients 1 4 --duration 20 --depth 10
    python benchmarks/serve_load.py --server-args --timeout 600 --threads 2    # options of `headrank serve`

Writes ``benchmarks/results/serve_load.md`` and ``.json`` (``--output`` changes the stem).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import threading
import time
from typing import Dict, List, Optional, Tuple

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import RESULTS, ROOT, quiet_offline_environment  # noqa: E402

SCIFACT = "beir-scifact"


def scifact_lists(count: int, depth: int) -> List[Tuple[str, List[str]]]:
    """The first ``count`` SciFact test queries with their BM25 top ``depth`` passages (title and text), read from
    the shared folder's files (queries, corpus, Pyserini BM25 run)."""
    from pyterrier_headrank.data.text import join_title

    folder = os.path.join(os.environ["HEADRANK_SHARED"], "data", SCIFACT)
    queries = {}
    with open(os.path.join(folder, "queries.jsonl"), encoding="utf-8") as lines:
        for line in lines:
            row = json.loads(line)
            queries[row["_id"]] = row["text"]
    run: Dict[str, List[str]] = {}
    with open(os.path.join(folder, "run.bm25.pyserini-flat.txt")) as lines:
        for line in lines:
            qid, _, docno, rank = line.split()[:4]
            if int(rank) <= depth and qid in queries:
                run.setdefault(qid, []).append(docno)
    qids = [q for q in run if len(run[q]) == depth][:count]
    wanted = {d for q in qids for d in run[q]}
    texts = {}
    with open(os.path.join(folder, "corpus.jsonl"), encoding="utf-8") as lines:
        for line in lines:
            row = json.loads(line)
            if row["_id"] in wanted:
                texts[row["_id"]] = join_title(row.get("title"), row.get("text"))
    return [(queries[q], [texts[d] for d in run[q]]) for q in qids]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rss_mib(pid: int) -> Tuple[float, float]:
    """(resident, peak resident) memory of process ``pid`` in MiB, from /proc (Linux)."""
    values = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(("VmRSS:", "VmHWM:")):
                values[line.split(":")[0]] = int(line.split()[1]) / 1024
    return values.get("VmRSS", float("nan")), values.get("VmHWM", float("nan"))


class Server:
    """``headrank serve`` in a subprocess on a free loopback port; a context manager."""

    def __init__(self, model: str, threads: Optional[int], extra: List[str]):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "pyterrier_headrank.integrations.cli", "serve", "--model", model,
                   "--port", str(self.port), "--quiet", *extra]
        if threads:
            command += ["--threads", str(threads)]
        self.command = command
        self.process: Optional[subprocess.Popen] = None

    def __enter__(self) -> "Server":
        import httpx

        started = time.perf_counter()
        self.process = subprocess.Popen(self.command, cwd=ROOT, stderr=subprocess.PIPE, text=True)
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited: {self.process.stderr.read()}")
            try:
                if httpx.get(self.url + "/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.perf_counter() - started > 600:
                raise RuntimeError("the server was not ready within 600 s")
            time.sleep(0.2)
        self.ready_s = time.perf_counter() - started
        return self

    def __exit__(self, *exc) -> None:
        self.process.terminate()
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()


def load(server: Server, lists, clients: int, duration: float, top_n: int) -> dict:
    """``clients`` threads, each sending requests back to back for ``duration`` seconds; the results as a row."""
    import httpx

    latencies: List[float] = []
    errors: List[str] = []
    answers: Dict[int, list] = {}
    mismatches = [0]
    lock = threading.Lock()
    rss = []
    stop = threading.Event()
    deadline = time.perf_counter() + duration

    def client(number: int) -> None:
        with httpx.Client(base_url=server.url, timeout=600) as http:
            k = number
            while time.perf_counter() < deadline:
                index = k % len(lists)
                k += clients
                query, texts = lists[index]
                sent = time.perf_counter()
                try:
                    response = http.post("/v1/rerank", json={"model": "headrank", "query": query, "documents": texts,
                                                             "top_n": top_n})
                except httpx.HTTPError as err:
                    with lock:
                        errors.append(f"{type(err).__name__}: {err}")
                    continue
                took = time.perf_counter() - sent
                with lock:
                    if response.status_code != 200:
                        errors.append(f"{response.status_code}: {response.text[:200]}")
                        continue
                    latencies.append(took)
                    ranking = [(r["index"], round(r["relevance_score"], 6)) for r in response.json()["results"]]
                    if answers.setdefault(index, ranking) != ranking:
                        mismatches[0] += 1

    def sample() -> None:
        while not stop.is_set():
            rss.append(rss_mib(server.process.pid))
            stop.wait(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    stop.set()
    sampler.join()
    resident, peak = rss_mib(server.process.pid)
    lat = np.array(latencies) if latencies else np.array([np.nan])
    return {"clients": clients, "seconds": round(elapsed, 1), "requests": len(latencies),
            "throughput_rps": round(len(latencies) / elapsed, 3),
            "passages_per_s": round(len(latencies) * len(lists[0][1]) / elapsed, 1),
            "p50_s": round(float(np.percentile(lat, 50)), 3), "p95_s": round(float(np.percentile(lat, 95)), 3),
            "p99_s": round(float(np.percentile(lat, 99)), 3), "mean_s": round(float(lat.mean()), 3),
            "errors": len(errors), "error_examples": errors[:3], "mismatches": mismatches[0],
            "server_rss_mib": round(max([r for r, _ in rss] + [resident]), 1), "server_peak_rss_mib": round(peak, 1),
            "load_average": f"{load_before:.1f} -> {os.getloadavg()[0]:.1f}"}


COLUMNS = [("clients", "clients"), ("seconds", "s"), ("requests", "requests"), ("throughput_rps", "req/s"),
           ("passages_per_s", "passages/s"), ("p50_s", "p50 s"), ("p95_s", "p95 s"), ("p99_s", "p99 s"),
           ("errors", "errors"), ("mismatches", "mismatches"), ("server_rss_mib", "server RSS MiB"),
           ("load_average", "machine load (1 min)")]


def table(rows: List[dict]) -> str:
    lines = ["| " + " | ".join(label for _, label in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(str(row[key]) for key, _ in COLUMNS) + " |" for row in rows]
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[4, 16], help="concurrent clients, one run each")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds per run")
    parser.add_argument("--model", default="smollm2-135m", help="what `headrank serve --model` loads")
    parser.add_argument("--depth", type=int, default=20, help="BM25 passages per request")
    parser.add_argument("--top-n", type=int, default=10, help="top_n of each request")
    parser.add_argument("--queries", type=int, default=50, help="distinct SciFact queries the clients cycle through")
    parser.add_argument("--threads", type=int, default=None, help="torch threads of the server (default: torch's)")
    parser.add_argument("--warmup", type=int, default=3, help="requests sent before the timed runs")
    parser.add_argument("--output", default=str(RESULTS / "serve_load"), help="stem of the .md and .json written")
    parser.add_argument("--server-args", nargs=argparse.REMAINDER, default=[],
                        help="further `headrank serve` options (last on the line)")
    args = parser.parse_args(argv)
    quiet_offline_environment()
    import httpx
    import torch

    lists = scifact_lists(args.queries, args.depth)
    with Server(args.model, args.threads, args.server_args) as server:
        print(f"server ready in {server.ready_s:.1f} s (pid {server.process.pid}, {server.url})", file=sys.stderr)
        for query, texts in lists[: args.warmup]:
            httpx.post(server.url + "/v1/rerank", json={"query": query, "documents": texts}, timeout=600)
        rows = []
        for clients in args.clients:
            row = load(server, lists, clients, args.duration, args.top_n)
            print(table([row]).splitlines()[-1], file=sys.stderr)
            rows.append(row)
        metrics = httpx.get(server.url + "/metrics").text
    batches = {line.split()[0]: float(line.split()[1]) for line in metrics.splitlines()
               if line.startswith("headrank_batch_requests_") and not line.startswith("headrank_batch_requests_created")
               and "{" not in line}
    setup = {"model": args.model, "device": "cuda" if torch.cuda.is_available() else "cpu",
             "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
             "cpu_cores_visible": len(os.sched_getaffinity(0)), "server_torch_threads": args.threads or "default",
             "collection": f"{SCIFACT} test, Pyserini BM25 top-{args.depth}", "distinct_queries": len(lists),
             "top_n": args.top_n, "duration_s": args.duration, "server_ready_s": round(server.ready_s, 1),
             "server_options": " ".join(server.command[server.command.index("serve") + 1:]).replace(
                 f"--port {server.port} ", ""),
             "requests_per_scoring_call": round(batches.get("headrank_batch_requests_sum", 0) /
                                                max(1.0, batches.get("headrank_batch_requests_count", 0)), 2),
             "python": platform.python_version(), "torch": torch.__version__,
             "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    text = table(rows)
    print(text)
    header = (f"`benchmarks/serve_load.py`: {setup['model']} on {setup['device']} "
              f"({setup['gpu'] or str(setup['cpu_cores_visible']) + ' CPU cores'}), {setup['collection']}, top_n "
              f"{args.top_n}; {args.duration:g} s per row; server: `headrank serve {setup['server_options']}`; "
              f"{setup['date']}.")
    with open(args.output + ".md", "w") as out:
        out.write(header + "\n\n" + text + "\n")
    with open(args.output + ".json", "w") as out:
        json.dump({"setup": setup, "rows": rows}, out, indent=2)
    return 0 if all(row["errors"] == 0 for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
