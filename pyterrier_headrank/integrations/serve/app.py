"""The HTTP app (FastAPI): the rerank endpoints in the shapes clients already speak, health, readiness and metrics.

========================  =====================================================================================
``POST /v1/rerank``       Cohere v1 and Jina: ``{model, query, documents, top_n, return_documents}`` ->
                          ``{id, model, results: [{index, relevance_score, document?}], meta}``
``POST /v2/rerank``       Cohere v2 (``cohere.ClientV2.rerank``): the same without ``document``
``POST /rerank``          Text Embeddings Inference: ``{query, texts, return_text}`` -> ``[{index, score, text?}]``
``GET /health``           liveness: 200 while the process serves HTTP
``GET /ready``            readiness: 200 once the model is loaded, else 503 (loading, or why it failed)
``GET /metrics``          Prometheus text format (:mod:`.metrics`)
========================  =====================================================================================

Results come best first; scores are HeadRank's own (``HeadRank.rank``'s), higher is better, not probabilities.
Failures are JSON ``{"message", "error", "error_type"}`` (Cohere's clients read ``message``, TEI's ``error``):
400 for a body that is not JSON, 401 without the API key when one is set, 413 over a size limit, 422 for a wrong
field, 429 when the queue is full, 503 while loading or after the request timeout, 500 for an unexpected failure of
that one request. No endpoint reads files or URLs named by a client, and the interactive docs are off.
"""
from __future__ import annotations

import asyncio
import hmac
import json
import time
import uuid
from contextlib import asynccontextmanager
from typing import Any, Dict, List

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from .schemas import ApiError, RerankJob, cohere_job, tei_job
from .scoring import Ranked
from .service import RerankService

#: routes that need no API key (probes); every other route needs it when a key is set
OPEN_ROUTES = frozenset({"/health", "/ready"})
ROUTES = frozenset({"/v1/rerank", "/v2/rerank", "/rerank", "/health", "/ready", "/metrics"})


def error_response(err: ApiError) -> JSONResponse:
    """An :class:`ApiError` as JSON that both Cohere's (``message``) and TEI's (``error``) clients read."""
    return JSONResponse({"message": err.message, "error": err.message, "error_type": err.kind}, err.status,
                        headers=err.headers)


def check_api_key(request: Request, api_key: str) -> None:
    """Refuse (401) a request without ``Authorization: Bearer <api_key>``; compared in constant time."""
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), api_key.encode()):
        raise ApiError(401, "missing or wrong API key: send 'Authorization: Bearer <key>'", "Unauthorized",
                       {"WWW-Authenticate": "Bearer"})


async def read_json(request: Request, max_bytes: int) -> Any:
    """The request body as JSON: 413 past ``max_bytes`` (checked before and while reading), 400 if not JSON."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise ApiError(413, f"the body has {int(declared)} bytes; the limit is {max_bytes}", "Size")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise ApiError(413, f"the body has more than {max_bytes} bytes; the limit is {max_bytes}", "Size")
    if not body:
        raise ApiError(400, "the body is empty; send a JSON object", "Validation")
    try:
        value = json.loads(bytes(body), parse_constant=refuse_non_json_constant)
    except (ValueError, UnicodeDecodeError) as err:
        raise ApiError(400, f"the body is not valid JSON ({err})", "Validation") from None
    try:  # a lone surrogate escape ("\\ud800") parses, but is no text: it could be neither scored nor echoed back
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise ApiError(400, "the body has a string with a lone UTF-16 surrogate escape (such as \\ud800), which is "
                            "not text", "Validation") from None
    return value


def refuse_non_json_constant(name: str):
    """``NaN``, ``Infinity`` and ``-Infinity`` parse in Python's ``json`` but are not JSON; refused (400)."""
    raise ValueError(f"{name} is not a JSON value")


def cohere_results(job: RerankJob, ranked: Ranked) -> List[Dict[str, Any]]:
    """Cohere/Jina ``results``: ``{index, relevance_score(, document)}``, best first."""
    return [{"index": i, "relevance_score": s, **({"document": job.documents[i]} if job.documents else {})}
            for i, s in ranked.top(job.top_n)]


def tei_results(job: RerankJob, ranked: Ranked) -> List[Dict[str, Any]]:
    """TEI's answer: ``[{index, score(, text)}]``, best first."""
    return [{"index": i, "score": s, **({"text": job.texts[i]} if job.documents else {})}
            for i, s in ranked.top(job.top_n)]


def create_app(service: RerankService) -> FastAPI:
    """The FastAPI app over ``service``; its lifespan starts the service (loading the model) and stops it."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        service.start()
        try:
            yield
        finally:
            await asyncio.to_thread(service.stop)

    from pyterrier_headrank.version import __version__

    app = FastAPI(title="HeadRank rerank service", version=__version__, lifespan=lifespan, docs_url=None,
                  redoc_url=None, openapi_url=None)
    app.state.service = service
    settings = service.settings

    @app.middleware("http")
    async def count_and_contain(request: Request, call_next):
        """Metrics for every request, and a JSON 500 (never a dropped connection) for anything unexpected."""
        started = time.perf_counter()
        path = request.url.path
        try:
            if settings.api_key is not None and path not in OPEN_ROUTES:
                check_api_key(request, settings.api_key)
            response = await call_next(request)
        except ApiError as err:
            response = error_response(err)
        except Exception:  # already logged by the service where it came from scoring
            response = error_response(ApiError(500, "internal error; other requests are not affected", "Backend"))
        service.metrics.observe(path if path in ROUTES else "other", response.status_code,
                                time.perf_counter() - started)
        return response

    @app.exception_handler(ApiError)
    async def api_error(_request: Request, err: ApiError) -> JSONResponse:
        return error_response(err)

    @app.get("/health")
    async def health() -> Dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready")
    async def ready():
        refusal = service.unavailable()
        if refusal is not None:
            return JSONResponse({"status": service.state, "model": service.model_name, "message": refusal.message},
                                503, headers=refusal.headers)
        return {"status": "ready", "model": service.model_name,
                **({"replica": service.replica} if service.replica else {})}

    @app.get("/metrics")
    async def metrics() -> Response:
        content, media_type = service.metrics.render()
        return Response(content, media_type=media_type)

    async def cohere(request: Request, version: str) -> JSONResponse:
        job = cohere_job(await read_json(request, settings.max_body_bytes), settings, echo_documents=version == "1")
        ranked = await service.rank(job)
        return JSONResponse({"id": str(uuid.uuid4()), "model": service.model_name,
                             "results": cohere_results(job, ranked),
                             "meta": {"api_version": {"version": version}}})

    @app.post("/v1/rerank")
    async def rerank_v1(request: Request) -> JSONResponse:
        return await cohere(request, "1")

    @app.post("/v2/rerank")
    async def rerank_v2(request: Request) -> JSONResponse:
        return await cohere(request, "2")

    @app.post("/rerank")
    async def rerank_tei(request: Request) -> JSONResponse:
        job = tei_job(await read_json(request, settings.max_body_bytes), settings)
        ranked = await service.rank(job)
        return JSONResponse(tei_results(job, ranked))

    return app
