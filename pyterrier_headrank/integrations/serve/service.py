"""``RerankService``: one loaded reranker behind the batching queue, with its settings, readiness and metrics.

This is what the HTTP app (:mod:`.app`) serves and what each Ray Serve replica (:mod:`.ray_serve`) holds. It knows
nothing of HTTP beyond the :class:`~.schemas.ApiError` statuses its failures map to:

* the model is still loading (or failed to load): 503, with ``Retry-After`` while loading;
* the queue is full: 429 with ``Retry-After`` (try again shortly; the request was not queued);
* no answer within ``request_timeout_s``: 503 (the request is dropped if it was not scored yet);
* the reranker refuses the input (a ``ValueError``): 422; anything else: 500 for that request alone.

The model is loaded and warmed (one tiny list) on the scorer thread when the service starts, so that ``/health``
answers at once, ``/ready`` turns true when the first real request will not pay the loading, and a model that cannot
be loaded is reported by ``/ready`` instead of killing the process.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import List, Optional, Union

from .batching import BatchQueue, QueueFull, QueueStopped
from .metrics import ServiceMetrics
from .schemas import ApiError, RerankJob
from .scoring import Ranked, rank_lists
from .settings import ServeSettings

LOG = logging.getLogger("pyterrier_headrank.serve")
#: requests scored in one call where the reranker batches windows (``max_batch_requests=None``)
GROUP = 8


def group_size(reranker) -> int:
    """``max_batch_requests=None``: :data:`GROUP` where ``reranker`` (loaded) puts several windows in one forward
    pass (an explicit ``batch_size`` above 1, or the GPU default), else 1."""
    batch_size = getattr(reranker, "batch_size", None)
    if batch_size is not None:
        return GROUP if batch_size > 1 else 1
    try:
        device = reranker.engine().reader.device
    except AttributeError:  # not an attention ranker: nothing to batch
        return 1
    return GROUP if getattr(device, "type", str(device)) == "cuda" else 1


class RerankService:
    """Serve ``reranker`` (a :class:`~pyterrier_headrank.HeadRank`, or anything with ``final_scores`` or ``rank``)
    under ``settings``; see the module docstring. Call :meth:`start` before :meth:`rank` and :meth:`stop` after.

    ``warm_up``: score one tiny list after loading, so that ``/ready`` means "the first request will be fast".
    """

    def __init__(self, reranker, settings: Optional[ServeSettings] = None, warm_up: bool = True):
        self.reranker = reranker
        self.settings = settings or ServeSettings()
        self.model_name = self.settings.model_name or str(getattr(reranker, "model_name", type(reranker).__name__))
        self.warm_up = warm_up
        self.state, self.error = "starting", None
        self.replica: Optional[str] = None  # set by a Ray Serve replica; /ready reports it
        self.queue: BatchQueue[RerankJob, Ranked] = BatchQueue(
            self._score, max_queue=self.settings.max_queue, max_batch=self.settings.max_batch_requests or 1,
            batch_wait=self.settings.batch_wait_ms / 1000.0, on_start=self._load, on_batch=self._count_batch)
        self.metrics = ServiceMetrics(self.queue.depth)

    # ---- life cycle ---------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the scorer thread, which loads and warms the model first (see :attr:`ready`)."""
        self.queue.start()

    def stop(self) -> None:
        """Refuse new requests, fail the queued ones (503) and let the current call finish."""
        self.queue.stop()

    def wait_ready(self, timeout: float = 600.0) -> None:
        """Block until the model is loaded and warmed; ``RuntimeError`` if it failed or took longer than ``timeout``."""
        deadline = time.monotonic() + timeout
        while not self.ready:
            if self.state == "failed":
                raise RuntimeError(f"headrank serve: the model could not be loaded ({self.error})")
            if time.monotonic() > deadline:
                raise RuntimeError(f"headrank serve: the model was not loaded within {timeout:g} s")
            time.sleep(0.05)

    @property
    def ready(self) -> bool:
        """True once the model is loaded and warmed."""
        return self.state == "ready"

    def _load(self) -> None:
        try:
            if hasattr(self.reranker, "engine"):
                self.reranker.engine()
            if self.settings.max_batch_requests is None:
                self.queue.max_batch = group_size(self.reranker)
            if self.warm_up:
                (result,) = rank_lists(self.reranker, [("warm-up query", ["a warm-up passage"])])
                if isinstance(result, Exception):
                    raise result
        except BaseException as err:
            self.state, self.error = "failed", f"{type(err).__name__}: {err}"
            LOG.error("headrank serve: the model could not be loaded: %s", self.error)
            raise
        self.state = "ready"
        self.metrics.ready.set(1)

    # ---- scoring ------------------------------------------------------------------------------------------------
    def _score(self, jobs: List[RerankJob]) -> List[Union[Ranked, Exception]]:
        results = rank_lists(self.reranker, [(job.query, job.texts) for job in jobs])
        self.metrics.documents.inc(sum(len(job.texts) for job, r in zip(jobs, results) if isinstance(r, Ranked)))
        return results

    def _count_batch(self, size: int) -> None:
        self.metrics.batch_requests.observe(size)

    def unavailable(self) -> Optional[ApiError]:
        """The 503 to answer while the model is not ready, else None."""
        if self.state == "failed":
            return ApiError(503, f"the model could not be loaded ({self.error})", "Unhealthy")
        if self.state != "ready":
            return ApiError(503, "the model is still loading; retry shortly", "Unhealthy", {"Retry-After": "5"})
        return None

    async def rank(self, job: RerankJob) -> Ranked:
        """Queue ``job``, wait for its ranking (at most ``request_timeout_s``), and map failures to :class:`ApiError`."""
        refusal = self.unavailable()
        if refusal is not None:
            raise refusal
        try:
            future = self.queue.submit(job)
        except QueueFull as err:
            raise ApiError(429, f"the server is busy: {err}; retry shortly", "Overloaded", {"Retry-After": "1"}) from None
        except QueueStopped as err:
            raise ApiError(503, str(err), "Unhealthy") from None
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), self.settings.request_timeout_s)
        except asyncio.TimeoutError:
            raise ApiError(503, f"no answer within {self.settings.request_timeout_s:g} s (the server is overloaded); "
                                f"retry later", "Overloaded", {"Retry-After": "5"}) from None
        except QueueStopped as err:
            raise ApiError(503, str(err), "Unhealthy") from None
        except ValueError as err:  # the reranker refused this input
            raise ApiError(422, str(err).splitlines()[0] if str(err) else type(err).__name__) from None
        except Exception as err:
            LOG.exception("headrank serve: a request failed")
            raise ApiError(500, f"the request could not be scored ({type(err).__name__}); other requests are not "
                                f"affected", "Backend") from None
