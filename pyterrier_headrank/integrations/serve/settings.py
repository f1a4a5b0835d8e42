"""The service's settings: request limits, batching, queueing and the optional API key, with safe defaults.

Every limit is on by default, so that a service started without options refuses oversized requests (413) instead of
spending minutes on them, and a full queue answers at once (429) instead of piling up work that will time out anyway.
The defaults fit a listwise reranker: HeadRank reads every document of a request in one prompt (or a few windows),
so a request with thousands of documents is a mistake, not a workload.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, fields
from typing import Optional

#: environment variable read for the API key when none is given (keeps the key out of the process list)
API_KEY_ENV = "HEADRANK_API_KEY"


@dataclass(frozen=True)
class ServeSettings:
    """What ``headrank serve`` enforces.

    Limits (a request over one gets 413):
        max_documents: documents (texts) per request.
        max_document_chars: characters of one document. HeadRank cuts each passage to its token limit anyway; this
            only bounds the work of reading and tokenising a request.
        max_query_chars: characters of the query (HeadRank cuts it to ``max_query_tokens`` too).
        max_total_chars: characters of the query and all documents together.
        max_body_bytes: bytes of one request body, checked before it is parsed.

    Batching and queueing:
        batch_wait_ms: after a request arrives, the scorer waits this long for others to score with it in one call.
        max_batch_requests: at most this many requests are scored in one call; ``None``: 8 where the reranker
            scores several windows per forward pass (a GPU, or an explicit ``batch_size`` above 1), else 1 (a CPU's
            default: one window per pass, where grouping requests would only make the first wait for the last).
        max_queue: requests waiting to be scored; one more is refused at once with 429 (Retry-After).
        request_timeout_s: a request not answered within this many seconds (queueing and scoring) gets 503.

    Other:
        api_key: when set, every endpoint but ``/health`` and ``/ready`` needs ``Authorization: Bearer <key>``.
        model_name: the name the API reports (``model`` in responses; default: the reranker's model name); requests
            may name any model, the service answers with the one it loaded.
    """

    max_documents: int = 100
    max_document_chars: int = 20_000
    max_query_chars: int = 2_000
    max_total_chars: int = 400_000
    max_body_bytes: int = 2_000_000
    batch_wait_ms: float = 5.0
    max_batch_requests: Optional[int] = None
    max_queue: int = 64
    request_timeout_s: float = 120.0
    api_key: Optional[str] = None
    model_name: Optional[str] = None

    def __post_init__(self):
        for field in fields(self):
            if field.name in ("api_key", "model_name") or (field.name == "max_batch_requests" and
                                                            self.max_batch_requests is None):
                continue
            value, minimum = getattr(self, field.name), 0 if field.name == "batch_wait_ms" else 1
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or value < minimum:
                raise ValueError(f"headrank serve: {field.name}={value!r} must be a finite number >= {minimum}")
        if self.api_key is not None and not self.api_key.strip():
            raise ValueError("headrank serve: the API key is empty")

    @classmethod
    def with_env_key(cls, **options) -> "ServeSettings":
        """Settings with ``api_key`` from ``$HEADRANK_API_KEY`` where it is not given (None or empty)."""
        if not options.get("api_key"):
            options["api_key"] = os.environ.get(API_KEY_ENV) or None
        return cls(**options)
