"""The ``headrank serve`` sub-command: its options, and starting the service from them.

The parser part imports nothing heavy, so that ``headrank --help`` stays fast; FastAPI, uvicorn, torch and the model
load only when the command runs. ``--replicas N`` (N > 1) serves N replicas through Ray Serve on a local Ray cluster
(:mod:`.ray_serve`); otherwise one process serves with uvicorn (:mod:`.server`).
"""
from __future__ import annotations

import argparse
import os
import sys
import warnings

from .settings import API_KEY_ENV, ServeSettings

DEFAULTS = ServeSettings()
#: command-line option -> ServeSettings field
LIMIT_OPTIONS = {"max_documents": "max_documents", "max_document_chars": "max_document_chars",
                 "max_query_chars": "max_query_chars", "max_total_chars": "max_total_chars",
                 "max_body_bytes": "max_body_bytes", "max_queue": "max_queue", "batch_wait_ms": "batch_wait_ms",
                 "max_batch_requests": "max_batch_requests", "timeout": "request_timeout_s"}


def add_serve_command(sub, add_model, formatter) -> argparse.ArgumentParser:
    """Add ``serve`` to the ``headrank`` sub-parsers ``sub``; ``add_model`` adds the model options the other
    commands share (--model, --heads/--fitted, --batch-size, --device, --dtype, --max-passage-tokens, --quiet)."""
    serve = sub.add_parser(
        "serve", formatter_class=formatter, help="serve HeadRank over HTTP (Cohere, Jina and TEI rerank APIs)",
        description="Serve HeadRank over HTTP: POST /v1/rerank and /v2/rerank (Cohere, Jina), POST /rerank (Text "
                    "Embeddings Inference), GET /health, /ready and /metrics (Prometheus). One loaded model; "
                    "requests that arrive together are scored together. See docs/serve.md.")
    add_model(serve)
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to bind; 127.0.0.1 serves this machine only, 0.0.0.0 every interface (then "
                            "set an API key)")
    serve.add_argument("--port", "-p", type=int, default=8080, help="port to listen on")
    serve.add_argument("--api-key", default=None,
                       help=f"require 'Authorization: Bearer KEY' on every endpoint but /health and /ready "
                            f"(default: ${API_KEY_ENV} when set, else no key; the variable keeps the key out of "
                            f"the process list)")
    serve.add_argument("--model-name", default=None,
                       help="the model name the API reports (default: the reranker's model name)")
    limits = serve.add_argument_group("limits (a request over one gets 413)")
    limits.add_argument("--max-documents", type=int, default=DEFAULTS.max_documents, help="documents per request")
    limits.add_argument("--max-document-chars", type=int, default=DEFAULTS.max_document_chars,
                        help="characters per document")
    limits.add_argument("--max-query-chars", type=int, default=DEFAULTS.max_query_chars, help="characters of the query")
    limits.add_argument("--max-total-chars", type=int, default=DEFAULTS.max_total_chars,
                        help="characters of the query and documents together")
    limits.add_argument("--max-body-bytes", type=int, default=DEFAULTS.max_body_bytes, help="bytes of a request body")
    queue = serve.add_argument_group("batching and queueing")
    queue.add_argument("--batch-wait-ms", type=float, default=DEFAULTS.batch_wait_ms,
                       help="how long the scorer waits for more requests to score together")
    queue.add_argument("--max-batch-requests", type=int, default=DEFAULTS.max_batch_requests,
                       help="requests scored together in one call at most (default: 8 where the reranker batches "
                            "windows, as on a GPU; else 1)")
    queue.add_argument("--max-queue", type=int, default=DEFAULTS.max_queue,
                       help="requests that may wait; one more gets 429 at once")
    queue.add_argument("--timeout", type=float, default=DEFAULTS.request_timeout_s,
                       help="seconds a request may take (waiting and scoring) before it gets 503")
    serve.add_argument("--threads", type=int, default=None,
                       help="torch CPU threads (of each replica with --replicas; default: torch's, one per core)")
    serve.add_argument("--replicas", type=int, default=1,
                       help="serve this many replicas through Ray Serve on a local Ray cluster (needs ray[serve]); "
                            "1 serves in this process")
    serve.add_argument("--gpus-per-replica", type=float, default=None,
                       help="GPUs each Ray Serve replica reserves (default: 1 when CUDA is present, else 0)")
    serve.add_argument("--verbose", "-v", action="store_true",
                       help="log every request and show warnings and progress bars")
    serve.set_defaults(func=cmd_serve)
    return serve


def settings_from(args) -> ServeSettings:
    """The :class:`ServeSettings` of the command line (the API key from ``$HEADRANK_API_KEY`` when not given)."""
    return ServeSettings.with_env_key(api_key=args.api_key, model_name=args.model_name,
                                      **{field: getattr(args, option) for option, field in LIMIT_OPTIONS.items()})


def _quiet_libraries() -> None:
    """No warnings, progress bars or library chatter in a service's log unless ``--verbose``."""
    for key, value in {"TRANSFORMERS_VERBOSITY": "error", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
                       "TQDM_DISABLE": "1"}.items():
        os.environ.setdefault(key, value)
    warnings.simplefilter("ignore")


def cmd_serve(args) -> int:
    """``headrank serve``: check the options, build the reranker, and serve until interrupted."""
    from ..reranker_options import build_reranker
    from ..trec_files import CliError

    try:
        import fastapi  # noqa: F401
        import prometheus_client  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as err:
        raise CliError(f"{err.name} is missing: install the serve extra, pip install 'pyterrier-headrank[serve]'") \
            from None
    if not 0 <= args.port <= 65535:
        raise CliError(f"--port {args.port} is not a port number (0-65535)")
    if args.replicas < 1:
        raise CliError("--replicas must be >= 1")
    settings = settings_from(args)  # a ValueError names the setting
    if not args.verbose:
        _quiet_libraries()
    say = (lambda text: None) if args.quiet else (lambda text: print(f"headrank serve: {text}", file=sys.stderr))
    if args.host not in ("127.0.0.1", "localhost", "::1") and settings.api_key is None:
        say(f"binding to {args.host} without an API key: anyone who reaches this port can use it "
            f"(set ${API_KEY_ENV} or --api-key)")
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    reranker = build_reranker(argparse.Namespace(**{**vars(args), "quiet": not args.verbose}))
    if args.replicas > 1:
        from .ray_serve import run_replicas
        run_replicas(reranker, settings, args.replicas, host=args.host, port=args.port,
                     gpus_per_replica=args.gpus_per_replica, verbose=args.verbose, threads=args.threads,
                     on_ready=lambda url: say(f"{args.replicas} replicas of {reranker!r} ready on {url}"))
        return 0
    from .server import run

    run(reranker, settings, args.host, args.port, verbose=args.verbose,
        on_ready=lambda url: say(f"{reranker!r} ready on {url} (POST /v1/rerank, /v2/rerank, /rerank)"))
    return 0
