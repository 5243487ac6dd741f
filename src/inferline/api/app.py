"""The ASGI application: routing, lifespan, and the one place errors become status codes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson

from inferline.api.http import (
    DUMP_OPTIONS,
    JSON_TYPE,
    ClientGone,
    Message,
    Receive,
    Request,
    Scope,
    Send,
    send_json,
)
from inferline.auth import ApiKeys
from inferline.batching import Batcher
from inferline.config import Settings
from inferline.errors import (
    DeadlineExceeded,
    InferlineError,
    InvalidInput,
    InvalidKey,
    NotFound,
    Overloaded,
    Unauthorized,
    Unavailable,
    reason_of,
)
from inferline.service import Service, State
from inferline.telemetry import context, logs, tracing
from inferline.telemetry.context import RequestRecord

log = logging.getLogger(__name__)

Handler = Callable[[Request, Send], Awaitable[None]]
ErrorBody = Callable[[int, str, InferlineError | None], Any]
"""Builds an error body from the status, the message and the error (None when unexpected)."""
Answer = tuple[int, tuple[tuple[bytes, bytes], ...], bytes]
"""A whole response: status, headers and body."""


def plain_error(status: int, message: str, exc: InferlineError | None) -> Any:
    return {"error": message}


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    path: str
    handler: Handler
    errors: ErrorBody = plain_error  # a protocol with its own error shape (OpenAI) sets this
    protocol: str | None = None  # set on the API routes: they are counted, logged and traced
    # The batcher whose queue the route's requests wait in, from the path parameters (it
    # raises NotFound or Unavailable first). Its room is checked before the body is read:
    # by the handler, and under overload by the connection as soon as the headers arrive
    # (App.early_refusal).
    queue: Callable[[dict[str, str]], Batcher] | None = None


CREDENTIAL_HEADERS = (b"authorization", b"x-api-key")
STATUS: dict[type[InferlineError], int] = {
    Unauthorized: 401,
    NotFound: 404,
    Overloaded: 429,
    Unavailable: 503,
    DeadlineExceeded: 504,
}


def _transfer_coding(headers: list[tuple[bytes, bytes]]) -> str | None:
    """A Transfer-Encoding other than plain ``chunked`` (httptools reads ``gzip, chunked``
    as chunked and leaves the gzip undone), or None."""
    for name, value in headers:
        if name == b"transfer-encoding" and value.strip().lower() != b"chunked":
            return value.decode("latin-1")
    return None


def status_of(exc: InferlineError) -> int:
    if isinstance(exc, InvalidInput):
        return exc.status
    for kind, status in STATUS.items():
        if isinstance(exc, kind):
            return status
    return 500


def error_headers(exc: InferlineError) -> list[tuple[bytes, bytes]]:
    if isinstance(exc, InvalidKey):  # RFC 6750, section 3.1
        return [(b"www-authenticate", b'Bearer realm="inferline", error="invalid_token"')]
    if isinstance(exc, Unauthorized):
        return [(b"www-authenticate", b'Bearer realm="inferline"')]
    if isinstance(exc, Overloaded):
        return [(b"retry-after", str(max(1, round(exc.retry_after))).encode())]
    return []


def _segment(found: re.Match[str]) -> str:
    return f"(?P<{found[1]}>{'.+' if found[2] else '[^/]+'})"


class Router:
    """Exact paths in a dict; paths with ``{name}`` segments as regexes, in order."""

    def __init__(self, routes: list[Route]) -> None:
        self._exact: dict[str, dict[str, Route]] = {}
        self._patterns: list[tuple[re.Pattern[str], dict[str, Route]]] = []
        for route in routes:
            if "{" in route.path:
                # fullmatch, not "$", which also matches before a final newline (.../ready%0A).
                # {name} is one segment; {name:path} takes slashes too (a model id such as
                # "meta-llama/Llama-3.1-8B"), as in Starlette.
                regex = re.compile(re.sub(r"\{(\w+)(:path)?\}", _segment, route.path))
                for pattern, methods in self._patterns:
                    if pattern.pattern == regex.pattern:
                        methods[route.method] = route
                        break
                else:
                    self._patterns.append((regex, {route.method: route}))
            else:
                self._exact.setdefault(route.path, {})[route.method] = route

    def match(self, path: str) -> tuple[dict[str, Route], dict[str, str]] | None:
        methods = self._exact.get(path)
        if methods is not None:
            return methods, {}
        for pattern, methods in self._patterns:
            found = pattern.fullmatch(path)
            if found:
                return methods, found.groupdict()
        return None


class App:
    def __init__(self, service: Service, routes: list[Route], keys: ApiKeys | None = None) -> None:
        self.service = service
        self.settings: Settings = service.settings
        self.router = Router(routes)
        self.keys = keys or ApiKeys([], [])
        self._refusals: dict[tuple[ErrorBody, Overloaded], Answer] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        limit = self.settings.max_header_bytes
        if sum(len(k) + len(v) for k, v in scope["headers"]) > limit:
            await send_json(
                send, 431, {"error": f"the headers are over the limit of {limit} bytes"}
            )
            return
        coding = _transfer_coding(scope["headers"])
        if coding is not None:  # RFC 9112, 6.1: its body cannot be read as meant
            message = f"transfer coding {coding!r} is not supported: use chunked alone"
            await send_json(send, 501, {"error": message})
            return
        found = self.router.match(scope["path"])
        if found is None:
            await send_json(send, 404, {"error": f"no route {scope['path']}"})
            return
        methods, params = found
        route = methods.get(scope["method"])
        if route is None and scope["method"] == "HEAD":  # RFC 9110 §9.3.2: GET, no body
            route = methods.get("GET")  # uvicorn sends no body for HEAD, keeps the length
        if route is None:
            allow = ", ".join(sorted({*methods, *(["HEAD"] if "GET" in methods else [])}))
            body = next(iter(methods.values())).errors  # the path's protocol sets the shape
            message = f"method {scope['method']} not allowed"
            await send_json(send, 405, body(405, message, None), [(b"allow", allow.encode())])
            return
        request = Request(scope, receive, self.settings.max_body_bytes, params)
        if route.protocol is None:  # probes, metrics, docs: served bare
            await self._serve(route, request, send)
            return
        record = RequestRecord(route.protocol)
        token = context.enter(record)
        self.service.metrics.inflight.inc()
        try:
            if tracing.enabled():
                name = f"{scope['method']} {route.path}"
                attributes = {"http.request.method": scope["method"], "http.route": route.path}
                carrier = tracing.carrier_of(scope["headers"])
                traced = tracing.open_server(name, carrier, attributes)
                record.span = traced.span
                try:
                    await self._serve(route, request, send)
                finally:
                    self._finish(record, request)  # in the span: the log line has its ids
                    self._close_span(record, request.status or 499)
                    traced.close()
            else:
                try:
                    await self._serve(route, request, send)
                finally:
                    self._finish(record, request)
        finally:
            context.leave(token)

    def _finish(self, record: RequestRecord, request: Request) -> None:
        metrics = self.service.metrics
        metrics.inflight.dec()
        record.status = str(request.status) if request.status else "499"  # the client left
        duration = time.perf_counter() - record.started
        metrics.record_request(record, duration)
        if self.settings.access_log:
            extra = {"method": request.method, "path": request.scope["path"]}
            logs.access(record, duration, extra)

    @staticmethod
    def _close_span(record: RequestRecord, status: int) -> None:
        span = record.span
        span.set_attributes(  # one call: each set_attribute takes the span's lock
            {
                "http.response.status_code": status,
                "inferline.model": record.model,
                "inferline.items": record.items,
                "inferline.tokens": record.tokens,
                "inferline.queue_wait_seconds": record.queue_wait,
                "inferline.inference_seconds": record.inference,
            }
        )
        if status >= 500:
            from opentelemetry.trace import Status, StatusCode

            span.set_status(Status(StatusCode.ERROR))

    async def _serve(self, route: Route, request: Request, send: Send) -> None:
        scope = request.scope

        async def send_marked(message: Message) -> None:
            if message["type"] == "http.response.start":
                request.responding = True
                request.status = message["status"]
            await send(message)

        try:
            slot: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
            if self.keys.enabled and not self.keys.is_open(scope["path"]):
                slot = self.keys.slot(self._identify(scope["headers"]))
            with slot:
                if route.queue is not None:
                    self._check_room(route.queue(request.path_params))
                await route.handler(request, send_marked)
        except ClientGone:
            return  # mid-body: no refusal to count, and no one to answer
        except asyncio.CancelledError:
            if request.disconnected:
                return  # the client went away; its queued texts were dropped
            if self.service.state is not State.DRAINING or request.responding:
                raise
            # A second signal ended the grace period, and the loop cancels what is left:
            # answer 503 rather than let uvicorn log a traceback and drop the connection.
            message = "the service stopped before this request was served"
            await send_json(send_marked, 503, route.errors(503, message, None))
        except InferlineError as exc:
            request.responding = True
            if status_of(exc) != 500:  # a refusal, not a failure
                self.service.metrics.reject(reason_of(exc))
            await self._error(send_marked, exc, route.errors)
        except Exception:
            request.responding = True
            error_id = uuid.uuid4().hex
            log.exception("unhandled error %s on %s %s", error_id, scope["method"], scope["path"])
            body = route.errors(500, f"internal error (id {error_id})", None)
            await send_json(send_marked, 500, body)
        finally:
            request.stop_watching()

    @staticmethod
    def _check_room(queue: Batcher) -> None:
        try:
            queue.check_room()
        except Overloaded:
            record = context.current()
            if record is not None:
                record.model = queue.name  # counted and logged under the model it waited for
            raise

    def early_refusal(
        self, method: bytes, url: bytes, headers: list[tuple[bytes, bytes]]
    ) -> Answer | None:
        """The 429 for a request that its route would refuse before reading its body, decided
        from the request line and headers alone; None when the request must be served
        normally. api/wire.py sends it without starting the ASGI machinery: under overload
        most requests are refusals, and each one's CPU is taken from the model.

        With API keys on, the key is checked here too, and a request without a valid one
        takes the normal path to its 401. With tracing on, the refusal gets its server span
        here, as it would on the normal path."""
        if method != b"POST" or not self.service.saturated():
            return None
        found = self._early_route(url, headers)
        if found is None:
            return None
        route, params, path = found
        assert route.queue is not None and route.protocol is not None
        try:
            queue = route.queue(params)
        except InferlineError:  # 404, 503: rare; the normal path words them
            return None
        refused = queue.refusal()
        if refused is None:
            return None
        record = RequestRecord(route.protocol, model=queue.name, status="429")
        if tracing.enabled():
            attributes = {"http.request.method": "POST", "http.route": route.path}
            carrier = tracing.carrier_of(headers)
            traced = tracing.open_server(f"POST {route.path}", carrier, attributes)
            record.span = traced.span
            try:
                self._count_refusal(record, refused, path)  # in the span: its log line has ids
                self._close_span(record, 429)
            finally:
                traced.close()
        else:
            self._count_refusal(record, refused, path)
        return self._refusal_answer(route.errors, refused)

    def _refusal_answer(self, errors: ErrorBody, refused: Overloaded) -> Answer:
        # The batcher shares one error while its Retry-After holds, so the answer is built
        # once for it: under overload this runs thousands of times a second.
        answer = self._refusals.get((errors, refused))
        if answer is None:
            if len(self._refusals) >= 64:
                self._refusals.clear()
            body = orjson.dumps(errors(429, str(refused), refused), option=DUMP_OPTIONS)
            answer = (429, (JSON_TYPE, *error_headers(refused)), body)
            self._refusals[(errors, refused)] = answer
        return answer

    def _count_refusal(self, record: RequestRecord, refused: Overloaded, path: str) -> None:
        metrics = self.service.metrics
        metrics.reject(refused.reason)
        duration = time.perf_counter() - record.started
        metrics.record_request(record, duration)
        if self.settings.access_log:
            logs.access(record, duration, {"method": "POST", "path": path})

    def _early_route(
        self, url: bytes, headers: list[tuple[bytes, bytes]]
    ) -> tuple[Route, dict[str, str], str] | None:
        if b"%" in url:  # percent-decoding is the normal path's
            return None
        if sum(len(k) + len(v) for k, v in headers) > self.settings.max_header_bytes:
            return None  # 431 comes first
        path = url.split(b"?", 1)[0].decode("latin-1")
        found = self.router.match(path)
        route = found[0].get("POST") if found else None
        if found is None or route is None or route.queue is None or route.protocol is None:
            return None
        if self.keys.enabled and not self.keys.is_open(path) and not self._has_key(headers):
            return None  # the normal path answers 401
        return route, found[1], path

    def _has_key(self, headers: list[tuple[bytes, bytes]]) -> bool:
        try:
            self._identify(headers)
        except Unauthorized:
            return False
        return True

    def _identify(self, headers: list[tuple[bytes, bytes]]) -> int:
        """The presented API key's id (ApiKeys.identify); Unauthorized without a valid one."""
        return self.keys.identify(
            (name.decode("latin-1"), value.decode("latin-1"))
            for name, value in headers
            if name in CREDENTIAL_HEADERS
        )

    async def _error(self, send: Send, exc: InferlineError, body: ErrorBody) -> None:
        status = status_of(exc)
        headers = error_headers(exc)
        if status == 500:
            error_id = uuid.uuid4().hex
            log.error("engine error %s: %s", error_id, exc, exc_info=exc)
            message = f"inference failed (id {error_id})"
        else:
            message = str(exc)
        await send_json(send, status, body(status, message, exc), headers)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            try:
                message = await receive()
            except asyncio.CancelledError:  # a forced exit skips the shutdown event
                return
            if message["type"] == "lifespan.startup":
                self.service.start_background()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.service.close(self.settings.shutdown_grace_s)
                await send({"type": "lifespan.shutdown.complete"})
                return
