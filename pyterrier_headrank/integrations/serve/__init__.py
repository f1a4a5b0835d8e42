"""``headrank serve``: HeadRank as an HTTP rerank service, in the API shapes that rerank clients already speak.

One process holds one loaded model; requests that arrive together are scored together from a bounded queue; bad
input gets a clear 4xx and never disturbs other requests. Scale-out runs several such replicas through Ray Serve.
``docs/serve.md`` is the user's guide. One idea per module:

* :mod:`.settings`: limits, batching, queueing and the API key (:class:`ServeSettings`), safe by default.
* :mod:`.schemas`: the Cohere/Jina and Text Embeddings Inference request shapes and their checks.
* :mod:`.scoring`: rank several requests in one reranker call, equal to ``HeadRank.rank`` on each.
* :mod:`.batching`: the bounded queue and the one scorer thread that drains it.
* :mod:`.metrics`: the Prometheus metrics.
* :mod:`.service`: the loaded reranker behind the queue (:class:`RerankService`), readiness, failures as statuses.
* :mod:`.app`: the FastAPI app and its endpoints (:func:`create_app`).
* :mod:`.server`: uvicorn in the foreground (:func:`run`) or on a thread (:class:`BackgroundServer`).
* :mod:`.ray_serve`: the same app as Ray Serve replicas.
* :mod:`.command`: the ``headrank serve`` command line.

Needs the ``serve`` extra (``pip install "pyterrier-headrank[serve]"``: FastAPI, uvicorn, prometheus-client); Ray
Serve needs ``ray[serve]`` too. Nothing here is imported with the package.
"""
from .settings import ServeSettings

_LAZY = {"RerankService": ".service", "create_app": ".app", "BackgroundServer": ".server", "run": ".server"}


def __getattr__(name):
    """Import the FastAPI side only when it is asked for (``from ...serve import create_app``)."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["ServeSettings", "RerankService", "create_app", "BackgroundServer", "run"]
