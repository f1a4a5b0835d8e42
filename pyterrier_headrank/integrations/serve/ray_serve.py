"""Scale-out through Ray Serve: several replicas of the same service, each with its own loaded model and queue.

Ray Serve's proxy takes the HTTP requests and routes each to a replica; every replica runs the same FastAPI app
(:func:`~.app.create_app`) over its own :class:`~.service.RerankService`, so the endpoints, limits, statuses and
results are those of ``headrank serve`` with one process. One replica per GPU: on a machine with CUDA each replica
reserves one GPU by default (Ray sets its ``CUDA_VISIBLE_DEVICES``, so HeadRank's default device is that GPU); on a
CPU each reserves ``cpus_per_replica`` cores.

A replica loads and warms its model in its constructor, so that Ray routes to it only once it can answer at once,
and reports a model that failed to load through Ray's health check. Each replica admits up to its own queue's
bound (``max_queue + max_batch_requests``), so that its 429/503 answers, not Ray's, say when it is full.

    from pyterrier_headrank import HeadRank
    from pyterrier_headrank.integrations.serve.ray_serve import application
    serve.run(application(HeadRank("smollm2-135m"), replicas=2), route_prefix="/")

or ``headrank serve --replicas 2``. Needs ``pip install "ray[serve]"``.
"""
from __future__ import annotations

import logging
import time
from typing import Callable, Optional

from ray import serve

from .app import create_app
from .service import GROUP, RerankService
from .settings import ServeSettings

DEPLOYMENT_NAME = "headrank"
APP_NAME = "headrank"


@serve.ingress()
class HeadRankReplica:
    """One Ray Serve replica: a :class:`RerankService` over its copy of ``reranker``, served by the usual app.

    ``reranker`` arrives pickled without its loaded model (HeadRank pickles its settings and heads only) and loads
    here, once per replica.
    """

    def __init__(self, reranker, settings: Optional[ServeSettings] = None, threads: Optional[int] = None):
        if threads:
            import torch
            torch.set_num_threads(threads)
        self.service = RerankService(reranker, settings)
        try:
            self.service.replica = serve.get_replica_context().replica_id.unique_id
        except Exception:  # outside a replica (local testing mode): no id to report
            self.service.replica = None
        self.service.start()
        self.service.wait_ready()

    def __serve_build_asgi_app__(self):
        """The ASGI app Ray Serve routes this replica's HTTP requests to."""
        return create_app(self.service)

    def check_health(self) -> None:
        """Ray's periodic health check: a replica whose model failed to load is replaced."""
        if self.service.state == "failed":
            raise RuntimeError(f"the model could not be loaded ({self.service.error})")


def application(reranker, settings: Optional[ServeSettings] = None, replicas: int = 2,
                gpus_per_replica: Optional[float] = None, cpus_per_replica: float = 1.0,
                threads: Optional[int] = None):
    """The Ray Serve application: ``replicas`` replicas of ``reranker`` (see the module docstring).

    ``gpus_per_replica``: ``None`` for 1 when this machine has CUDA, else 0. ``threads``: torch threads per replica
    (default: torch's); on a CPU, match ``cpus_per_replica``.
    """
    import torch

    settings = settings or ServeSettings()
    gpus = (1.0 if torch.cuda.is_available() else 0.0) if gpus_per_replica is None else float(gpus_per_replica)
    deployment = serve.deployment(HeadRankReplica, name=DEPLOYMENT_NAME).options(
        num_replicas=int(replicas), ray_actor_options={"num_cpus": float(cpus_per_replica), "num_gpus": gpus},
        max_ongoing_requests=settings.max_queue + (settings.max_batch_requests or GROUP),
        health_check_period_s=10, graceful_shutdown_timeout_s=30)
    return deployment.bind(reranker, settings, threads)


def start(reranker, settings: Optional[ServeSettings] = None, replicas: int = 2, host: str = "127.0.0.1",
          port: int = 8000, verbose: bool = False, **options) -> str:
    """Start Ray Serve's proxy on ``host:port`` (Ray must be initialised, or a local cluster is started) and deploy
    :func:`application`; returns the base URL once every replica has loaded its model. Ray's and Serve's
    informational logs and warnings are kept out of the terminal unless ``verbose``."""
    import ray

    level = logging.INFO if verbose else logging.ERROR
    logging.getLogger("ray.serve").setLevel(level)
    if not ray.is_initialized():
        ray.init(include_dashboard=False, log_to_driver=verbose, logging_level=level)
    serve.start(http_options={"host": host, "port": int(port)})
    serve.run(application(reranker, settings, replicas, **options), name=APP_NAME, route_prefix="/")
    return f"http://{'[' + host + ']' if ':' in host else host}:{port}"


def run_replicas(reranker, settings: Optional[ServeSettings] = None, replicas: int = 2, host: str = "127.0.0.1",
                 port: int = 8080, gpus_per_replica: Optional[float] = None,
                 on_ready: Optional[Callable[[str], None]] = None, verbose: bool = False, **options) -> None:
    """``headrank serve --replicas N``: :func:`start` on a local Ray cluster, then serve until interrupted.
    ``options``: more :func:`application` keywords (``cpus_per_replica``, ``threads``)."""
    import ray

    try:
        url = start(reranker, settings, replicas, host, port, verbose, gpus_per_replica=gpus_per_replica, **options)
        if on_ready is not None:
            on_ready(url)
        while True:
            time.sleep(1.0)
    except KeyboardInterrupt:
        pass
    finally:
        serve.shutdown()
        ray.shutdown()
