"""uvicorn's httptools protocol, with one socket write per response and JSON bodies on the
errors that uvicorn answers before the app sees a request.

uvicorn writes a response's status line and headers, then its body, as two
``transport.write`` calls, and uvloop sends each at once: two syscalls and two TCP segments
for every response. On loopback each send also pays for the receiver's side of TCP, so in a
profile of 429 refusals the two writes took half of the event loop's time. Writes made in
one event-loop step are gathered here and sent as one, when the step ends.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from inferline.api.framing import BodyDecoder, FramingError
from inferline.api.http import ON_DISCONNECT, Receive, Scope, Send, send_json


class _Gathered:
    """The connection's transport, with ``write`` deferred to the end of the loop step.

    Everything else goes to the real transport; ``close`` sends what is gathered first.
    """

    __slots__ = ("_loop", "_pending", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not self._pending:
            self._loop.call_soon(self._flush)
        self._pending.append(data)

    def _flush(self) -> None:
        if not self._pending:
            return
        data = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
        self._pending.clear()
        if not self._transport.is_closing():
            self._transport.write(data)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


MALFORMED = json.dumps(
    {"error": "malformed HTTP request: the request line, a header or the body's framing"}
).encode()


async def _over_capacity(scope: Scope, receive: Receive, send: Send) -> None:
    message = "the server is serving as many connections as it allows; retry shortly"
    headers = [(b"retry-after", b"1"), (b"connection", b"close")]
    await send_json(send, 503, {"error": message}, headers)


EarlyAnswer = Callable[
    [bytes, bytes, list[tuple[bytes, bytes]]],
    tuple[int, Sequence[tuple[bytes, bytes]], bytes] | None,
]


class GatheringProtocol(HttpToolsProtocol):
    """Pass as uvicorn's ``http`` protocol class.

    It takes over uvicorn's connection cap (``limit_concurrency``) so that the 503 past it
    has a JSON body, as malformed requests' 400s do here; uvicorn's own are plain text. It
    serves a request that offers an Upgrade as the plain HTTP/1.1 request it also is, body
    included (api/framing.py says why that needs doing). And when the app has an
    ``early_refusal`` (api/app.py), a request it refuses is answered as soon as its headers
    are parsed, with no ASGI task, and its body is skipped: a refusal then costs about a
    third less of the event loop (docs/architecture.md, "Refusing at the headers").
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.cap, self.limit_concurrency = self.limit_concurrency, None
        self.declined: BodyDecoder | None = None  # the body after a declined Upgrade
        self.early: EarlyAnswer | None = getattr(self.app, "early_refusal", None)
        self.answered = False  # the request in progress was answered at its headers
        self.on_lost: Callable[[], None] | None = None  # the running handler's, if any
        settings = getattr(self.app, "settings", None)
        self.head_limit: int | None = getattr(settings, "max_header_bytes", None)
        self.in_head = False  # between a request's first byte and the end of its headers
        self.began = False  # a request began in the data being read
        self.head_bytes = 0

    def data_received(self, data: bytes) -> None:
        self._unset_keepalive_if_required()
        if self.declined is not None:
            self._declined_body(data)
            return
        self.began = False
        try:
            self.parser.feed_data(data)
            if self.in_head and not self.began:
                self._count_head(len(data))
        except httptools.HttpParserUpgrade as exc:
            if self._should_upgrade():  # a WebSocket server; ours runs with ws="none"
                self.handle_websocket_upgrade()
                return
            # The request has started, its body marked complete and empty; its task has
            # not run yet, so the body can still be handed to it.
            try:
                self.declined = BodyDecoder.for_headers(self.headers)
            except FramingError:
                self.send_400_response("")
                return
            self.cycle.more_body = True
            self.cycle.message_event.clear()
            self._declined_body(data[exc.args[0] :])
        except httptools.HttpParserError:
            self.logger.warning("Invalid HTTP request received.")
            self.send_400_response("")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.in_head, self.began, self.head_bytes = True, True, 0

    def _count_head(self, size: int) -> None:
        """httptools keeps a request line and headers in memory until they end, and the app
        checks their size only then: a client could send hundreds of MB of one header. A
        read that began inside the headers and did not end them is all header, so the
        total is known to within the read in which the request began."""
        self.head_bytes += size
        limit = self.head_limit
        if limit is None or self.head_bytes <= limit:
            return
        self.logger.warning("refused a request whose headers are over %d bytes", limit)
        body = json.dumps({"error": f"the headers are over the limit of {limit} bytes"})
        self._answer_and_close(b"431 Request Header Fields Too Large", body.encode())
        self.in_head = False

    def _declined_body(self, data: bytes) -> None:
        assert self.declined is not None
        try:
            pieces, done, rest = self.declined.feed(data)
        except FramingError:
            self.send_400_response("")
            return
        for piece in pieces:
            self.on_body(piece)
        if not done:
            return
        self.declined = None
        self.parser = httptools.HttpRequestParser(self)  # the old one stays in upgrade mode
        self.parser.set_dangerous_leniencies(lenient_data_after_close=True)  # as uvicorn's
        self.on_message_complete()
        if rest:
            self.data_received(rest)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        gathered: Any = _Gathered(transport, self.loop)
        super().connection_made(gathered)

    def _on_disconnect(self, callback: Callable[[], None], *, remove: bool = False) -> None:
        """The scope's ON_DISCONNECT hook (api/http.py): a handler's callback for a lost
        connection, in place of a watcher task waiting for http.disconnect."""
        if not remove:
            self.on_lost = callback
        elif self.on_lost is callback:
            self.on_lost = None

    def connection_lost(self, exc: Exception | None) -> None:
        callback, self.on_lost = self.on_lost, None
        super().connection_lost(exc)
        if callback is not None:
            callback()

    def on_headers_complete(self) -> None:
        self.in_head = False
        self.scope[ON_DISCONNECT] = self._on_disconnect  # type: ignore[literal-required]
        cap = self.cap
        if cap is None or (len(self.connections) < cap and len(self.tasks) < cap):
            if self.early is None or not self._answered_early():
                super().on_headers_complete()
            return
        self.logger.warning("refused a request: %d connections are open", len(self.connections))
        app, self.app = self.app, _over_capacity
        try:
            super().on_headers_complete()  # starts the request with the app it finds
        finally:
            self.app = app

    def _answered_early(self) -> bool:
        cycle, parser = self.cycle, self.parser
        if cycle is not None and not cycle.response_complete:
            return False  # a pipelined request: answers must keep their order
        if self.expect_100_continue or parser.should_upgrade():
            return False
        assert self.early is not None
        answer = self.early(parser.get_method(), self.url, self.headers)
        if answer is None:
            return False
        status, headers, body = answer
        keep_alive = parser.get_http_version() != "1.0" and parser.should_keep_alive()
        content = [STATUS_LINE[status]]
        for name, value in (*self.server_state.default_headers, *headers):
            content += (name, b": ", value, b"\r\n")
        content.append(b"content-length: %d\r\n" % len(body))
        if not keep_alive:
            content.append(b"connection: close\r\n")
        content += (b"\r\n", body)
        self.transport.write(b"".join(content))
        self.answered = True
        if not keep_alive:
            self.transport.close()
        return True

    def on_body(self, body: bytes) -> None:
        if not self.answered:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self.answered:  # its body was skipped; now the connection can go on
            self.answered = False
            self.on_response_complete()
            return
        super().on_message_complete()
        # uvicorn stops reading once 64 KiB of body wait unread, and reads again only when
        # the app asks for more; after the last piece it never asks, so a client hanging up
        # went unseen until the answer, and its texts ran. What comes next is a pipelined
        # request, which uvicorn pauses for itself.
        self.flow.resume_reading()

    def send_400_response(self, msg: str) -> None:
        self._answer_and_close(b"400 Bad Request", MALFORMED)

    def _answer_and_close(self, status: bytes, body: bytes) -> None:
        """A JSON error, answered by the connection itself, which then closes."""
        head = [
            b"HTTP/1.1 " + status,
            *(name + b": " + value for name, value in self.server_state.default_headers),
            b"content-type: application/json",
            b"content-length: " + str(len(body)).encode(),
            b"connection: close",
        ]
        self.transport.write(b"\r\n".join(head) + b"\r\n\r\n" + body)
        self.transport.close()
