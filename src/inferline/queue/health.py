"""The worker's own HTTP port: ``/metrics`` for Prometheus, and ``/health/live`` and
``/health/ready`` for the kubelet, served from a thread of their own.

Liveness asks the worker's event loop to run a callback: a loop that cannot within
``LOOP_TIMEOUT_S`` is stuck (a blocking call, a deadlock), and a restart is the cure.
A worker that cannot reach Redis is alive but not ready: restarting it would not bring
Redis back, and its reads retry with backoff on their own.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Callable, Iterable, Sequence
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app

UNAVAILABLE = "503 Service Unavailable"
LOOP_TIMEOUT_S = 2.0  # under the manifests' probe timeout (3 s)

Readiness = Callable[[], "str | None"]  # None when ready, else why not
StartResponse = Callable[[str, list[tuple[str, str]]], Any]


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """A line per scrape and per probe would bury the worker's own logs."""


class WorkerHealth:
    """The WSGI app. ``readiness`` is called on the server's thread: it must only read."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        registry: CollectorRegistry,
        readiness: Readiness,
        loop_timeout: float = LOOP_TIMEOUT_S,
    ) -> None:
        self.loop = loop
        self.readiness = readiness
        self.loop_timeout = loop_timeout
        self._metrics = make_wsgi_app(registry)

    def __call__(self, environ: dict[str, Any], start: StartResponse) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD")
        if method not in ("GET", "HEAD"):
            body = {"error": "only GET is served here"}
            return _json(start, "405 Method Not Allowed", body, [("Allow", "GET, HEAD")])
        if method == "GET":
            return self._get(environ, start)
        # HEAD: GET's status and headers, its length included, and no body (wsgiref sends
        # whatever the app returns).
        answer: dict[str, Any] = {}

        def keep(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            answer.update(status=status, headers=headers)
            return lambda data: None

        content = b"".join(self._get({**environ, "REQUEST_METHOD": "GET"}, keep))
        headers = [(k, v) for k, v in answer["headers"] if k.lower() != "content-length"]
        start(answer["status"], [*headers, ("Content-Length", str(len(content)))])
        return []

    def _get(self, environ: dict[str, Any], start: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            return self._metrics(environ, start)  # type: ignore[no-any-return]
        if path in ("/health", "/health/live"):
            status, body = self.live()
        elif path == "/health/ready":
            status, body = self.ready()
        else:
            status, body = "404 Not Found", {"error": f"no such path: {path}"}
        return _json(start, status, body)

    def live(self) -> tuple[str, dict[str, str]]:
        stalled = self.stalled()
        if stalled is not None:
            return UNAVAILABLE, {"status": "stalled", "reason": stalled}
        return "200 OK", {"status": "alive"}

    def ready(self) -> tuple[str, dict[str, str]]:
        reason = self.stalled() or self.readiness()
        if reason is not None:
            return UNAVAILABLE, {"status": "not ready", "reason": reason}
        return "200 OK", {"status": "ready"}

    def stalled(self) -> str | None:
        """Why the event loop is not running callbacks, or None when it is."""
        answered = threading.Event()
        try:
            self.loop.call_soon_threadsafe(answered.set)
        except RuntimeError:  # closed: the worker is on its way out
            return "the event loop has stopped"
        if not answered.wait(self.loop_timeout):
            return f"the event loop did not run a callback within {self.loop_timeout:g} s"
        return None


def _json(
    start: StartResponse, status: str, body: dict[str, str], extra: Sequence[tuple[str, str]] = ()
) -> list[bytes]:
    data = json.dumps(body).encode()
    headers = [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
    start(status, [*headers, *extra])
    return [data]


def serve(app: WorkerHealth, host: str, port: int) -> WSGIServer:
    """Serve ``app`` on a daemon thread; raises OSError when the port cannot be bound."""
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]

    class Server(ThreadingMixIn, WSGIServer):
        daemon_threads = True
        address_family = family

    server = make_server(host, port, app, Server, handler_class=_Quiet)
    threading.Thread(target=server.serve_forever, name="worker-http", daemon=True).start()
    return server
