"""Run the app with uvicorn: in the foreground (``headrank serve``) or on a background thread (tests, notebooks).

Both bind to 127.0.0.1 unless told otherwise, and are quiet unless ``verbose``: uvicorn logs warnings and errors
only, with no access log (a service that logs every request fills disks; turn it on with ``verbose``).
"""
from __future__ import annotations

import socket
import threading
import time
from typing import Callable, Optional

from .app import create_app
from .service import RerankService
from .settings import ServeSettings

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080


def _config(app, verbose: bool, **options):
    import uvicorn

    return uvicorn.Config(app, log_level="info" if verbose else "warning", access_log=verbose,
                          timeout_graceful_shutdown=10, **options)


def run(reranker, settings: Optional[ServeSettings] = None, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
        verbose: bool = False, on_ready: Optional[Callable[[str], None]] = None) -> None:
    """Serve ``reranker`` on ``host:port`` until interrupted (Ctrl-C or SIGTERM end it gracefully).

    ``on_ready(url)`` is called once the model is loaded and warmed (``/ready`` answers 200 from then on).
    """
    import uvicorn

    service = RerankService(reranker, settings)
    server = uvicorn.Server(_config(create_app(service), verbose, host=host, port=port))
    if on_ready is not None:
        url = f"http://{'[' + host + ']' if ':' in host else host}:{port}"
        threading.Thread(target=_announce, args=(service, server, on_ready, url), daemon=True).start()
    server.run()


def _announce(service: RerankService, server, on_ready: Callable[[str], None], url: str) -> None:
    """Call ``on_ready(url)`` when the model is ready and the socket is listening (polls; gives up on failure)."""
    while not server.should_exit:
        if service.state == "failed":
            return
        if service.ready and server.started:
            on_ready(url)
            return
        time.sleep(0.05)


class BackgroundServer:
    """The real server (uvicorn, a loopback socket) on a thread of this process; a context manager.

    ``with BackgroundServer(reranker) as server: httpx.post(server.url + "/v1/rerank", ...)``. The port is chosen
    by the system (free by construction) unless given. :meth:`start` returns once the socket listens and, with
    ``wait_ready``, once the model is loaded.
    """

    def __init__(self, reranker, settings: Optional[ServeSettings] = None, host: str = DEFAULT_HOST, port: int = 0,
                 verbose: bool = False, service: Optional[RerankService] = None):
        self.service = service or RerankService(reranker, settings)
        self.host, self.port, self.verbose = host, port, verbose
        self._server = None
        self._thread: Optional[threading.Thread] = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, wait_ready: bool = True, timeout: float = 300.0) -> "BackgroundServer":
        import uvicorn

        sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        self._server = uvicorn.Server(_config(create_app(self.service), self.verbose))
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True,
                                        name="headrank-serve-http")
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not (self._server.started and (self.service.ready or not wait_ready)):
            if self.service.state == "failed":
                self.stop()
                raise RuntimeError(f"headrank serve: the model could not be loaded ({self.service.error})")
            if time.monotonic() > deadline or not self._thread.is_alive():
                self.stop()
                raise RuntimeError(f"headrank serve: the server did not become ready within {timeout:g} s")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        """Ask uvicorn to exit (it stops the service through the app's lifespan) and wait for the thread."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(30)

    def __enter__(self) -> "BackgroundServer":
        return self.start() if self._thread is None else self

    def __exit__(self, *exc) -> None:
        self.stop()
