"""`headrank serve` (issue 21): the real server (uvicorn on a loopback port, no mocks of it) over the real SmolLM2,
driven with httpx and with the Cohere SDK; every kind of bad input; 16 concurrent clients against sequential calls;
the queue's 429/503 and readiness with a deliberately slow or broken reranker; the command line in a subprocess and
Ray Serve replicas on a local Ray cluster, both with the tiny random Qwen3 (fast to load).

SmolLM2 loads once per session (the shared ``smollm2`` fixture); the SciFact lists are short (4 queries, 6 passages
each) so that the whole module stays within a couple of minutes on two cores.
"""
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("prometheus_client")
httpx = pytest.importorskip("httpx")

from pyterrier_headrank import HeadRank  # noqa: E402
from pyterrier_headrank.integrations.serve import BackgroundServer, RerankService, ServeSettings  # noqa: E402
from pyterrier_headrank.integrations.serve.batching import BatchQueue  # noqa: E402

from conftest import ROOT, SHARED, local_ray, need  # noqa: E402

SCIFACT = SHARED / "data" / "beir-scifact"
DEPTH = 6  # passages per SciFact list
LIMITS = dict(max_documents=30, max_document_chars=5_000, max_query_chars=500, max_total_chars=60_000,
              max_body_bytes=200_000, max_batch_requests=8)  # 8: requests are grouped on the CPU too (as on a GPU)
TINY_HEADS = [(1, 0), (2, 1), (3, 3)]


def scifact_lists(count: int, depth: int = DEPTH):
    """The first ``count`` SciFact test queries with their BM25 top ``depth`` passages (title and text), in BM25
    order: real queries and passages, read straight from the shared files."""
    from pyterrier_headrank.data.text import join_title

    queries = {}
    for line in need(SCIFACT / "queries.jsonl").open(encoding="utf-8"):
        row = json.loads(line)
        queries[row["_id"]] = row["text"]
    run = {}
    for line in need(SCIFACT / "run.bm25.pyserini-flat.txt").open():
        qid, _, docno, rank = line.split()[:4]
        if int(rank) <= depth and qid in queries:
            run.setdefault(qid, []).append(docno)
    qids = list(run)[:count]
    wanted = {d for q in qids for d in run[q]}
    texts = {}
    for line in need(SCIFACT / "corpus.jsonl").open(encoding="utf-8"):
        row = json.loads(line)
        if row["_id"] in wanted:
            texts[row["_id"]] = join_title(row.get("title"), row.get("text"))
    return [(queries[q], [texts[d] for d in run[q]]) for q in qids]


@pytest.fixture(scope="module")
def lists():
    return scifact_lists(4)


@pytest.fixture(scope="module")
def reranker(smollm2):
    """HeadRank("smollm2-135m"), sharing the session's loaded model; one torch thread while this module runs (the
    machine's other cores stay free for the clients and the Ray workers), restored after it."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield HeadRank("smollm2-135m", device="cpu")
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def server(reranker):
    with BackgroundServer(reranker, ServeSettings(**LIMITS)) as running:
        yield running


@pytest.fixture(scope="module")
def expected(reranker, lists):
    """``HeadRank.rank`` on each list: what the service must answer."""
    return [reranker.rank(query, texts) for query, texts in lists]


def _same(results, hits, index="index", score="score"):
    assert [r[index] for r in results] == [h["corpus_id"] for h in hits]
    assert [r[score] for r in results] == pytest.approx([h["score"] for h in hits], rel=1e-6, abs=1e-9)


def _post(server, path, body, **kw):
    return httpx.post(server.url + path, json=body, timeout=120, **kw)


# ---- both API shapes equal HeadRank.rank --------------------------------------------------------------------------
def test_cohere_jina_shape_equals_rank(server, lists, expected):
    query, texts = lists[0]
    documents = [t if i % 2 else {"text": t, "id": f"doc-{i}"} for i, t in enumerate(texts)]  # strings and objects
    response = _post(server, "/v1/rerank", {"model": "anything", "query": query, "documents": documents,
                                             "top_n": 5, "return_documents": True})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "smollm2-135m" and body["id"]
    _same(body["results"], expected[0][:5], score="relevance_score")
    for result in body["results"]:
        assert result["document"] == ({"text": texts[result["index"]], "id": f"doc-{result['index']}"}
                                      if result["index"] % 2 == 0 else {"text": texts[result["index"]]})
    bare = _post(server, "/v1/rerank", {"query": query, "documents": texts}).json()  # no top_n, no documents
    _same(bare["results"], expected[0], score="relevance_score")
    assert all("document" not in r for r in bare["results"])


def test_tei_shape_equals_rank(server, lists, expected):
    query, texts = lists[1]
    response = _post(server, "/rerank", {"query": query, "texts": texts, "return_text": True, "truncate": True})
    assert response.status_code == 200, response.text
    results = response.json()
    _same(results, expected[1])
    assert [r["text"] for r in results] == [texts[r["index"]] for r in results]


def test_cohere_sdk_v2_and_v1(server, lists, expected):
    """The Cohere Python SDK, unchanged, pointed at the local base URL: ClientV2 posts /v2/rerank, Client /v1/rerank."""
    cohere = pytest.importorskip("cohere")
    query, texts = lists[2]
    v2 = cohere.ClientV2(api_key="unused", base_url=server.url, timeout=120)
    response = v2.rerank(model="headrank", query=query, documents=texts, top_n=3)
    assert [r.index for r in response.results] == [h["corpus_id"] for h in expected[2][:3]]
    assert [r.relevance_score for r in response.results] == pytest.approx([h["score"] for h in expected[2][:3]])
    v1 = cohere.Client(api_key="unused", base_url=server.url, timeout=120)
    response = v1.rerank(query=query, documents=texts, top_n=2, return_documents=True)
    assert [r.index for r in response.results] == [h["corpus_id"] for h in expected[2][:2]]
    assert [r.document.text for r in response.results] == [texts[h["corpus_id"]] for h in expected[2][:2]]


def test_sixteen_concurrent_clients_get_the_sequential_results(server, lists):
    """16 clients at once (4 lists, each asked 4 times, through both shapes), with bad requests mixed in: every good
    one gets what a sequential call gets; requests that arrived together were scored together. (Lists cut to 4
    passages: the equality with HeadRank.rank is checked on whole lists above; this is about concurrency.)"""
    lists = [(query, texts[:4]) for query, texts in lists]
    sequential = [_post(server, "/rerank", {"query": q, "texts": t}).json() for q, t in lists]
    before = _batches(server)

    def client(i):
        query, texts = lists[i % len(lists)]
        if (i // len(lists)) % 2:
            return "tei", i % len(lists), _post(server, "/rerank", {"query": query, "texts": texts})
        return "cohere", i % len(lists), _post(server, "/v2/rerank", {"query": query, "documents": texts})

    def bad(i):
        return _post(server, "/v1/rerank", {"query": "", "documents": ["x"]} if i % 2 else {"documents": ["x"]})

    with ThreadPoolExecutor(24) as pool:
        good = [pool.submit(client, i) for i in range(16)]
        bads = [pool.submit(bad, i) for i in range(8)]
        answers = [f.result() for f in good]
        assert all(f.result().status_code == 422 for f in bads)
    for shape, i, response in answers:
        assert response.status_code == 200, response.text
        results = response.json() if shape == "tei" else response.json()["results"]
        scores = [r["score"] if shape == "tei" else r["relevance_score"] for r in results]
        assert [r["index"] for r in results] == [r["index"] for r in sequential[i]]
        assert scores == pytest.approx([r["score"] for r in sequential[i]], rel=1e-6, abs=1e-9)
    calls, requests = (a - b for a, b in zip(_batches(server), before))
    assert requests == 16 and calls < 16  # some requests shared a call


def _batches(server):
    """(scoring calls, requests scored) so far, from /metrics."""
    text = httpx.get(server.url + "/metrics").text
    values = {line.split()[0]: float(line.split()[1]) for line in text.splitlines() if line.startswith("headrank_batch")}
    return values["headrank_batch_requests_count"], values["headrank_batch_requests_sum"]


# ---- bad input: a clear 4xx, and the server goes on ---------------------------------------------------------------
BAD = [
    ("/v1/rerank", b"{not json", 400, "not valid JSON"),
    ("/v1/rerank", b"", 400, "empty"),
    ("/v1/rerank", b"\xff\xfe", 400, "not valid JSON"),
    ("/v1/rerank", b'{"query": "q", "documents": [{"text": "a", "x": NaN}], "return_documents": true}', 400,
     "NaN is not a JSON value"),
    ("/v1/rerank", b'{"query": "q", "documents": ["a"], "top_n": Infinity}', 400, "Infinity is not a JSON value"),
    ("/rerank", b'{"query": "q\\ud800", "texts": ["a"]}', 400, "lone UTF-16 surrogate"),
    ("/v1/rerank", b'{"query": "q", "documents": [{"text": "a", "x": "\\udfff"}], "return_documents": true}', 400,
     "surrogate"),
    ("/v1/rerank", [], 422, "JSON object"),
    ("/v1/rerank", {"documents": ["a"]}, 422, "query: field required"),
    ("/v1/rerank", {"query": "q"}, 422, "documents: field required"),
    ("/v1/rerank", {"query": 7, "documents": ["a"]}, 422, "query: input should be a valid string"),
    ("/v1/rerank", {"query": "   ", "documents": ["a"]}, 422, "query: must not be empty"),
    ("/v1/rerank", {"query": "q", "documents": []}, 422, "at least one document"),
    ("/v1/rerank", {"query": "q", "documents": "a b c"}, 422, "documents"),
    ("/v1/rerank", {"query": "q", "documents": ["a", 5]}, 422, "documents.1"),
    ("/v1/rerank", {"query": "q", "documents": [{"title": "no text"}]}, 422, "documents.0"),
    ("/v1/rerank", {"query": "q", "documents": ["a"], "top_n": 0}, 422, "top_n"),
    ("/v1/rerank", {"query": "q", "documents": ["a"], "top_n": -3}, 422, "top_n"),
    ("/v1/rerank", {"query": "q", "documents": ["a"], "top_n": "2"}, 422, "top_n"),
    ("/v1/rerank", {"query": "q", "documents": ["a"], "top_n": 2.5}, 422, "top_n"),
    ("/v1/rerank", {"query": "q", "documents": ["a"], "return_documents": "yes"}, 422, "return_documents"),
    ("/v1/rerank", {"query": "q", "documents": ["a"], "rank_fields": ["title"]}, 422, "rank_fields"),
    ("/v1/rerank", {"query": "q", "documents": ["a"] * 31}, 413, "31 documents; the limit is 30"),
    ("/v1/rerank", {"query": "q", "documents": ["a", "b" * 5_001]}, 413, "documents.1: 5001 characters"),
    ("/v1/rerank", {"query": "q" * 501, "documents": ["a"]}, 413, "query: 501 characters"),
    ("/v1/rerank", {"query": "q", "documents": ["c" * 4_000] * 16}, 413, "characters in the query and documents"),
    ("/v1/rerank", {"query": "q", "documents": ["a" * 4_000] * 60}, 413, "bytes"),
    ("/v2/rerank", {"query": "q", "documents": [["nested"]]}, 422, "documents.0"),
    ("/rerank", {"query": "q"}, 422, "texts: field required"),
    ("/rerank", {"query": "q", "texts": [{"text": "objects are not TEI"}]}, 422, "texts.0"),
    ("/rerank", {"query": "q", "texts": ["a"], "truncate": "no"}, 422, "truncate"),
    ("/rerank", {"query": "q", "texts": ["a"], "return_text": 1}, 422, "return_text"),
    ("/rerank", {"query": "q", "texts": []}, 422, "at least one document"),
]


@pytest.mark.parametrize("path,body,status,message", BAD, ids=[f"{i}-{b[0]}-{b[2]}" for i, b in enumerate(BAD)])
def test_bad_input_gets_a_clear_4xx(server, path, body, status, message):
    if isinstance(body, bytes):
        response = httpx.post(server.url + path, content=body, headers={"content-type": "application/json"})
    else:
        response = _post(server, path, body)
    assert response.status_code == status, response.text
    error = response.json()
    assert message.lower() in error["message"].lower() and error["error"] == error["message"]


def test_other_mistakes_and_the_server_goes_on(server, lists, expected):
    assert httpx.get(server.url + "/v1/rerank").status_code == 405
    assert httpx.get(server.url + "/no/such/thing").status_code == 404
    assert httpx.post(server.url + "/rerank", content=b"x" * 300_000).status_code == 413  # declared length
    huge = _post(server, "/v1/rerank", {"query": "q", "documents": ["a", "b", "c"], "top_n": 10 ** 30})
    assert huge.status_code == 200 and len(huge.json()["results"]) == 3  # a huge top_n returns every document
    assert httpx.get(server.url + "/health").json() == {"status": "ok"}
    query, texts = lists[0]
    _same(_post(server, "/rerank", {"query": query, "texts": texts}).json(), expected[0])


# ---- health, readiness, metrics, API key ------------------------------------------------------------------------
def test_health_ready_and_metrics(server):
    assert httpx.get(server.url + "/ready").json() == {"status": "ready", "model": "smollm2-135m"}
    text = httpx.get(server.url + "/metrics").text
    for name in ("headrank_requests_total{", "headrank_request_errors_total{", "headrank_queue_depth ",
                 "headrank_request_latency_seconds_bucket{", "headrank_batch_requests_count", "headrank_ready 1.0"):
        assert name in text, name
    assert 'endpoint="/v1/rerank",status="200"' in text


def test_api_key(reranker):
    key = secrets.token_urlsafe(16)
    with BackgroundServer(reranker, ServeSettings(api_key=key)) as keyed:
        body = {"query": "what do bees make", "documents": ["Bees make honey.", "Trains run on rails."]}
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": key}, {"Authorization": f"Basic {key}"}):
            response = _post(keyed, "/v1/rerank", body, headers=headers)
            assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
        assert httpx.get(keyed.url + "/metrics").status_code == 401
        assert httpx.get(keyed.url + "/health").status_code == 200 and httpx.get(keyed.url + "/ready").status_code == 200
        response = _post(keyed, "/v1/rerank", body, headers={"Authorization": f"Bearer {key}"})
        assert response.status_code == 200 and response.json()["results"][0]["index"] == 0
    with pytest.raises(ValueError, match="empty"):
        ServeSettings(api_key=" ")


# ---- the queue: 429 when full, 503 on timeout, never a hang ------------------------------------------------------
class GatedReranker:
    """A reranker (not a server mock: the server around it is real) whose scoring waits for ``gate``: it holds the
    scorer busy, so that the queue fills on cue. Scores favour longer texts."""

    model_name = "gated"

    def __init__(self):
        self.gate = threading.Event()
        self.gate.set()

    def final_scores(self, lists, first_stage):
        assert self.gate.wait(30)
        return [[float(len(t)) for t in texts] for _, texts in lists]


def test_full_queue_gets_429_and_a_slow_answer_503():
    gated = GatedReranker()
    settings = ServeSettings(max_queue=1, max_batch_requests=1, batch_wait_ms=0, request_timeout_s=1.0)
    with BackgroundServer(gated, settings) as running:
        body = {"query": "q", "texts": ["a", "bbb", "cc"]}
        assert [r["index"] for r in _post(running, "/rerank", body).json()] == [1, 2, 0]
        gated.gate.clear()
        with ThreadPoolExecutor(3) as pool:
            first = pool.submit(_post, running, "/rerank", body)  # taken by the scorer, which then waits
            time.sleep(0.3)
            second = pool.submit(_post, running, "/rerank", body)  # waits in the queue (max_queue=1)
            time.sleep(0.3)
            started = time.perf_counter()
            third = _post(running, "/rerank", body)  # the queue is full: refused at once
            assert third.status_code == 429 and time.perf_counter() - started < 0.5
            assert third.headers["retry-after"] and "busy" in third.json()["message"]
            assert first.result().status_code == 503 and second.result().status_code == 503  # the timeout, 1 s
            assert "no answer within 1 s" in second.result().json()["message"]
        gated.gate.set()
        assert [r["index"] for r in _post(running, "/rerank", body).json()] == [1, 2, 0]  # and it goes on
        metrics = httpx.get(running.url + "/metrics").text
        assert 'headrank_request_errors_total{endpoint="/rerank",status="429"} 1.0' in metrics
        assert 'headrank_request_errors_total{endpoint="/rerank",status="503"} 2.0' in metrics


class BrokenReranker:
    """A reranker whose model cannot be loaded (as a missing weights file would)."""

    model_name = "broken"

    def engine(self):
        raise OSError("no weights in /nowhere")


def test_readiness_while_loading_and_after_a_failure():
    loading = GatedReranker()
    loading.engine = lambda: loading.gate.wait(30)
    loading.gate.clear()
    running = BackgroundServer(loading).start(wait_ready=False)
    try:
        ready = httpx.get(running.url + "/ready")
        assert ready.status_code == 503 and ready.json()["status"] == "starting" and ready.headers["retry-after"]
        assert httpx.get(running.url + "/health").status_code == 200
        assert _post(running, "/rerank", {"query": "q", "texts": ["a"]}).status_code == 503
        loading.gate.set()
        running.service.wait_ready(30)
        assert httpx.get(running.url + "/ready").status_code == 200
    finally:
        running.stop()
    with pytest.raises(RuntimeError, match="no weights in /nowhere"):
        BackgroundServer(BrokenReranker()).start()
    broken = BackgroundServer(BrokenReranker()).start(wait_ready=False)
    try:
        with pytest.raises(RuntimeError, match="could not be loaded"):
            broken.service.wait_ready(30)
        ready = httpx.get(broken.url + "/ready")
        assert ready.status_code == 503 and "no weights in /nowhere" in ready.json()["message"]
        response = _post(broken, "/v1/rerank", {"query": "q", "documents": ["a"]})
        assert response.status_code == 503 and "could not be loaded" in response.json()["message"]
        assert httpx.get(broken.url + "/health").status_code == 200
    finally:
        broken.stop()


def test_service_refuses_bad_settings():
    with pytest.raises(ValueError, match="max_queue"):
        ServeSettings(max_queue=0)
    with pytest.raises(ValueError, match="batch_wait_ms"):
        ServeSettings(batch_wait_ms=-1)
    for bad in (float("nan"), float("inf")):  # NaN passes `< minimum`; inf would stop the worker's clock
        with pytest.raises(ValueError, match="request_timeout_s=.* must be a finite number"):
            ServeSettings(request_timeout_s=bad)
        with pytest.raises(ValueError, match="batch_wait_ms=.* must be a finite number"):
            ServeSettings(batch_wait_ms=bad)
        with pytest.raises(ValueError, match="BatchQueue: .*batch_wait="):
            BatchQueue(lambda items: items, batch_wait=bad)
    assert RerankService(GatedReranker()).model_name == "gated"


def test_requests_are_grouped_where_windows_are_batched(reranker):
    """max_batch_requests=None: one request per call on a CPU (one window per pass there), 8 with batch_size > 1."""
    from pyterrier_headrank.integrations.serve.service import group_size
    assert group_size(reranker) == 1
    assert group_size(HeadRank("smollm2-135m", device="cpu", batch_size=4)) == 8
    assert group_size(GatedReranker()) == 1


# ---- the command line, in a subprocess ---------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_ready(url: str, process, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read()
        try:
            if httpx.get(url + "/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} was not ready within {timeout:g} s")


def test_headrank_serve_command(tiny_qwen3_folder, lists):
    heads = ",".join(f"{layer}:{head}" for layer, head in TINY_HEADS)
    port = _free_port()
    env = {**os.environ, "HEADRANK_API_KEY": "k3y", "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen([sys.executable, "-m", "pyterrier_headrank.integrations.cli", "serve", "--model",
                                tiny_qwen3_folder, "--heads", heads, "--port", str(port), "--threads", "1"],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, process)
        query, texts = lists[3]
        response = httpx.post(url + "/v1/rerank", json={"query": query, "documents": texts},
                              headers={"Authorization": "Bearer k3y"}, timeout=60)
        assert response.status_code == 200, response.text
        hits = HeadRank(tiny_qwen3_folder, TINY_HEADS).rank(query, texts)
        _same(response.json()["results"], hits, score="relevance_score")
        assert httpx.post(url + "/v1/rerank", json={"query": query, "documents": texts}).status_code == 401
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=60)
    assert process.returncode in (0, -signal.SIGTERM), err  # uvicorn shuts down gracefully, then re-raises SIGTERM
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("headrank serve: HeadRank(") and f"ready on {url}" in lines[0], err
    assert out == ""


def test_load_benchmark_runs(tiny_qwen3_folder, tmp_path):
    """benchmarks/serve_load.py end to end on small settings (its table in docs/serve.md comes from a full run)."""
    need(SCIFACT / "corpus.jsonl")
    heads = ",".join(f"{layer}:{head}" for layer, head in TINY_HEADS)
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "serve_load.py"), "--model", tiny_qwen3_folder,
                           "--clients", "2", "--duration", "1", "--depth", "4", "--queries", "3", "--threads", "1",
                           "--output", str(tmp_path / "load"), "--server-args", "--heads", heads],
                          capture_output=True, text=True, timeout=300, cwd=ROOT,
                          env={**os.environ, "HEADRANK_SHARED": str(SHARED)})
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "load.json").read_text())
    (row,) = report["rows"]
    assert row["clients"] == 2 and row["requests"] > 0 and row["errors"] == 0 and row["mismatches"] == 0
    assert row["server_rss_mib"] > 0 and "| 2 |" in (tmp_path / "load.md").read_text()


def test_headrank_serve_refuses_bad_options():
    from pyterrier_headrank.integrations.cli import main
    assert main(["serve", "--max-documents", "0"]) == 1
    assert main(["serve", "--port", "70000"]) == 1
    assert main(["serve", "--replicas", "0"]) == 1


# ---- Ray Serve: replicas on a local Ray cluster --------------------------------------------------------------------
@pytest.fixture(scope="module")
def ray_cluster():
    """A local two-CPU Ray cluster with Ray Serve (``conftest.local_ray``), as tests/test_parallel.py starts one."""
    with local_ray("ray.serve") as ray:
        yield ray


def test_ray_serve_replicas(ray_cluster, tiny_qwen3_folder, lists):
    from ray import serve

    from pyterrier_headrank.integrations.serve import ray_serve

    reranker = HeadRank(tiny_qwen3_folder, TINY_HEADS)
    port = _free_port()
    started = time.perf_counter()
    url = ray_serve.start(reranker, ServeSettings(**LIMITS), replicas=2, port=port, cpus_per_replica=0.5,
                          threads=1)
    print(f"Ray Serve, 2 replicas ready: {time.perf_counter() - started:.1f}s")
    try:
        assert url == f"http://127.0.0.1:{port}"
        replicas = {httpx.get(url + "/ready", timeout=30).json()["replica"] for _ in range(30)}
        assert len(replicas) == 2  # both replicas answer
        expected = [reranker.rank(query, texts) for query, texts in lists]

        def client(i):
            query, texts = lists[i % len(lists)]
            return i % len(lists), httpx.post(url + "/v2/rerank", json={"query": query, "documents": texts},
                                              timeout=120)

        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(client, range(16)))
        for i, response in answers:
            assert response.status_code == 200, response.text
            _same(response.json()["results"], expected[i], score="relevance_score")
        bad = httpx.post(url + "/v1/rerank", json={"query": "q", "documents": []}, timeout=30)
        assert bad.status_code == 422 and "at least one document" in bad.json()["message"]
    finally:
        serve.shutdown()
