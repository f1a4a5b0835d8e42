"""The request bodies the service accepts, in the shapes that rerank clients already send, and their checks.

* Cohere (``POST /v1/rerank``, ``POST /v2/rerank``) and Jina (``POST /v1/rerank``):
  ``{model, query, documents, top_n, return_documents}``, documents as strings or ``{"text": ...}`` objects (v1; an
  object's other fields come back unchanged in ``document``).
* Text Embeddings Inference (``POST /rerank``): ``{query, texts, return_text, truncate, raw_scores}``.

Types are strict (a number where text is expected is refused, not converted), and fields these clients send that
HeadRank has no use for (``max_tokens_per_doc``, ``max_chunks_per_doc``, ``priority``, ``truncation_direction``, ...)
are accepted and ignored, so that a stock client works unchanged. :func:`check_request` then applies what a schema
cannot say: a non-empty query, at least one document, and the size limits of :class:`~.settings.ServeSettings`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, ValidationError

from .settings import ServeSettings


class TextDocument(BaseModel):
    """A document given as an object: its ``text`` is ranked, its other fields come back as they were sent."""

    model_config = ConfigDict(extra="allow")
    text: StrictStr


class CohereRerankRequest(BaseModel):
    """Cohere's and Jina's rerank request (``/v1/rerank``, ``/v2/rerank``).

    ``top_n``: at least 1; a ``top_n`` beyond the number of documents returns them all (as Cohere does).
    ``return_documents``: Cohere's default, false (Jina's clients pass it explicitly). ``model``: any name; the
    service reranks with the one model it loaded and reports that model's name. ``rank_fields``: only ``["text"]``
    (the field HeadRank reads) or nothing.
    """

    model_config = ConfigDict(extra="ignore")
    model: Optional[StrictStr] = None
    query: StrictStr
    documents: List[Union[StrictStr, TextDocument]]
    top_n: Optional[StrictInt] = Field(default=None, ge=1)
    return_documents: Optional[StrictBool] = None
    rank_fields: Optional[List[StrictStr]] = None


class TeiRerankRequest(BaseModel):
    """Text Embeddings Inference's rerank request (``/rerank``).

    ``truncate`` and ``raw_scores`` are accepted for compatibility: HeadRank always cuts each text to the reranker's
    passage length (that is how it reads passages), and its scores are always its raw scores (the ranking equals
    ``HeadRank.rank``'s; there is no probability to squash them into).
    """

    model_config = ConfigDict(extra="ignore")
    query: StrictStr
    texts: List[StrictStr]
    return_text: StrictBool = False
    truncate: Optional[StrictBool] = None
    raw_scores: Optional[StrictBool] = None


class ApiError(Exception):
    """A request the service refuses or cannot serve: its HTTP ``status``, a message that says what to change,
    the error's kind (as Text Embeddings Inference names them: Validation, Size, Overloaded, Unhealthy, ...) and
    extra response headers (``Retry-After``, ``WWW-Authenticate``)."""

    def __init__(self, status: int, message: str, kind: str = "Validation", headers: Optional[Dict[str, str]] = None):
        super().__init__(message)
        self.status, self.message, self.kind, self.headers = status, message, kind, headers or {}


@dataclass
class RerankJob:
    """What one request asks for, whatever its shape: the query, the texts, how many results and what to echo."""

    query: str
    texts: List[str]
    top_n: int
    documents: Optional[List[Dict[str, Any]]]  # what ``document`` echoes (Cohere v1 / Jina), else None


def describe_errors(err: ValidationError) -> str:
    """A pydantic error as one line: ``field.path: what is wrong; ...`` (at most five, then a count)."""
    parts = []
    for item in err.errors()[:5]:
        where = ".".join(str(p) for p in item["loc"]) or "body"
        parts.append(f"{where}: {item['msg'].lower()}")
    more = len(err.errors()) - 5
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def parse(model: type, body: Any) -> BaseModel:
    """``body`` (decoded JSON) as ``model``, or :class:`ApiError` 422 naming the fields that are wrong."""
    if not isinstance(body, dict):
        raise ApiError(422, f"the body must be a JSON object, not {type(body).__name__}")
    try:
        return model.model_validate(body)
    except ValidationError as err:
        raise ApiError(422, describe_errors(err)) from None


def check_request(query: str, texts: List[str], settings: ServeSettings, list_name: str) -> None:
    """Refuse an empty query or list (422) and anything over the limits (413), with the limit in the message."""
    if len(query) > settings.max_query_chars:
        raise ApiError(413, f"query: {len(query)} characters; the limit is {settings.max_query_chars}", "Size")
    if not query.strip():
        raise ApiError(422, "query: must not be empty")
    if not texts:
        raise ApiError(422, f"{list_name}: give at least one document to rerank")
    if len(texts) > settings.max_documents:
        raise ApiError(413, f"{list_name}: {len(texts)} documents; the limit is {settings.max_documents} per "
                              f"request", "Size")
    longest = max(range(len(texts)), key=lambda i: len(texts[i]))
    if len(texts[longest]) > settings.max_document_chars:
        raise ApiError(413, f"{list_name}.{longest}: {len(texts[longest])} characters; the limit is "
                              f"{settings.max_document_chars} per document", "Size")
    total = len(query) + sum(len(t) for t in texts)
    if total > settings.max_total_chars:
        raise ApiError(413, f"{total} characters in the query and documents; the limit is "
                              f"{settings.max_total_chars} per request", "Size")


def cohere_job(body: Any, settings: ServeSettings, echo_documents: bool) -> RerankJob:
    """A Cohere/Jina request as a :class:`RerankJob` (``echo_documents``: v1, where ``document`` may come back)."""
    request = parse(CohereRerankRequest, body)
    if request.rank_fields not in (None, ["text"]):
        raise ApiError(422, f"rank_fields: {request.rank_fields!r} is not supported; HeadRank ranks the 'text' "
                              f"field of each document")
    texts = [d if isinstance(d, str) else d.text for d in request.documents]
    check_request(request.query, texts, settings, "documents")
    top_n = len(texts) if request.top_n is None else min(request.top_n, len(texts))
    documents = None
    if echo_documents and request.return_documents:
        documents = [{"text": d} if isinstance(d, str) else d.model_dump() for d in request.documents]
    return RerankJob(request.query, texts, top_n, documents)


def tei_job(body: Any, settings: ServeSettings) -> RerankJob:
    """A Text Embeddings Inference request as a :class:`RerankJob` (every text is returned, best first)."""
    request = parse(TeiRerankRequest, body)
    check_request(request.query, request.texts, settings, "texts")
    documents = [{"text": t} for t in request.texts] if request.return_text else None
    return RerankJob(request.query, request.texts, len(request.texts), documents)
