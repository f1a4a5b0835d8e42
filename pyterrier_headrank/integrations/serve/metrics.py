"""The service's Prometheus metrics (``GET /metrics``), through ``prometheus-client``.

Each service keeps its metrics in a registry of its own, so that several services in one process (the tests, Ray
Serve replicas sharing a worker) neither collide nor mix their counts. Endpoints are labelled by route, never by the
raw path, so that clients probing random paths cannot grow the label set.

* ``headrank_requests_total{endpoint,status}``: requests answered.
* ``headrank_request_errors_total{endpoint,status}``: those answered with a 4xx or 5xx.
* ``headrank_request_latency_seconds{endpoint}``: time from the request's arrival to its answer (histogram).
* ``headrank_queue_depth``: requests waiting to be scored, read when scraped.
* ``headrank_batch_requests``: requests scored together in one call (histogram).
* ``headrank_documents_total``: documents ranked.
* ``headrank_ready``: 1 once the model is loaded and warmed.
"""
from __future__ import annotations

from typing import Callable, Tuple

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 32, 64)


class ServiceMetrics:
    """The counters, gauges and histograms of one service, in their own registry (see the module docstring)."""

    def __init__(self, queue_depth: Callable[[], int]):
        self.registry = CollectorRegistry(auto_describe=True)
        labels = ["endpoint", "status"]
        self.requests = Counter("headrank_requests", "HTTP requests answered, by endpoint and status code", labels,
                                registry=self.registry)
        self.errors = Counter("headrank_request_errors", "HTTP requests answered with a 4xx or 5xx status", labels,
                              registry=self.registry)
        self.latency = Histogram("headrank_request_latency_seconds", "Seconds from a request's arrival to its answer",
                                 ["endpoint"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.queue_depth = Gauge("headrank_queue_depth", "Requests waiting to be scored", registry=self.registry)
        self.queue_depth.set_function(lambda: float(queue_depth()))
        self.batch_requests = Histogram("headrank_batch_requests", "Requests scored together in one call",
                                        buckets=BATCH_BUCKETS, registry=self.registry)
        self.documents = Counter("headrank_documents", "Documents ranked", registry=self.registry)
        self.ready = Gauge("headrank_ready", "1 once the model is loaded and warmed, else 0", registry=self.registry)

    def observe(self, endpoint: str, status: int, seconds: float) -> None:
        """Count one answered request."""
        self.requests.labels(endpoint, str(status)).inc()
        if status >= 400:
            self.errors.labels(endpoint, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)

    def render(self) -> Tuple[bytes, str]:
        """The metrics in Prometheus' text format, and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
