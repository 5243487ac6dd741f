"""A lean HTTP/1.1 client for the gateway's hot path: pooled keep-alive connections, with
httptools (uvicorn's C parser) reading the answers.

httpx spent about 60% of the gateway's event-loop time per forwarded batch (h11 in pure
Python, anyio and the pool's bookkeeping; py-spy, `multi` at one connection). This client
does the one thing the OIP engine needs, a request with a body and an answer read whole, in
a few calls. HTTP/2 stays on httpx (``http2 = true``).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Sequence
from typing import cast
from urllib.parse import urlsplit

import httptools


class UpstreamClosed(ConnectionError):
    """The connection failed or closed before a whole answer came: safe to retry, as
    inference has no side effects."""


class ConnectTimeout(TimeoutError):
    """No connection within the connect timeout; nothing was sent."""


class _Answer:
    """httptools callbacks for one answer."""

    def __init__(self, limit: int) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.headers: dict[str, str] = {}
        self.body: list[bytes] = []
        self.size = 0
        self.limit = limit
        self.done = False
        self.keep = False
        self.head = False  # all headers came

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self.head = True

    def ends_at_close(self) -> bool:
        """An answer with no length and not chunked ends where the connection does
        (RFC 9112, 6.3); httptools has no end-of-input call to say so itself."""
        framed = "content-length" in self.headers
        framed |= "chunked" in self.headers.get("transfer-encoding", "").lower()
        return self.head and not self.done and not framed

    def on_body(self, body: bytes) -> None:
        self.size += len(body)
        if self.size > self.limit:
            raise UpstreamClosed(f"answer over {self.limit} bytes")
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.done = True
        self.keep = self.parser.should_keep_alive()  # reset once feed_data returns


class _Connection(asyncio.Protocol):
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.answered = False  # some bytes of the current exchange's answer came
        self._waiter: asyncio.Future[None] | None = None
        self._answer = _Answer(limit)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's does not subclass it

    def data_received(self, data: bytes) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():  # unasked bytes: this connection is unusable
            self.close()
            return
        self.answered = True
        answer = self._answer
        try:
            answer.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            cause = exc.__context__  # what a callback raised
            why = str(cause) if isinstance(cause, UpstreamClosed) else f"bad answer: {exc}"
            waiter.set_exception(UpstreamClosed(why))
            self.close()
            return
        if answer.done:
            waiter.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        if exc is None and self._answer.ends_at_close():  # a clean close, not a reset
            waiter.set_result(None)
            return
        waiter.set_exception(UpstreamClosed("connection closed before the answer"))

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    async def exchange(self, request: bytes) -> tuple[int, dict[str, str], bytes, bool]:
        assert self.transport is not None
        answer = self._answer = _Answer(self.limit)
        self.answered = False
        self._waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        await self._waiter
        status = answer.parser.get_status_code()
        return status, answer.headers, b"".join(answer.body), answer.keep


class Http1Pool:
    """Requests to one origin (``http://`` or ``https://``) over at most ``max_connections``
    keep-alive connections."""

    def __init__(
        self,
        url: str,
        *,
        ssl_context: ssl.SSLContext | None,
        max_connections: int,
        max_answer: int,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url}")
        self._host = parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._prefix = parts.path.rstrip("/")
        self._ssl = ssl_context if parts.scheme == "https" else None
        default = 443 if parts.scheme == "https" else 80
        netloc = f"[{self._host}]" if ":" in self._host else self._host
        self._authority = netloc if self._port == default else f"{netloc}:{self._port}"
        self._idle: list[_Connection] = []
        self._slots = asyncio.Semaphore(max_connections)
        self._max_answer = max_answer

    async def request(
        self,
        method: str,
        path: str,
        headers: Sequence[tuple[str, str]],
        body: bytes,
        *,
        seconds: float,
        connect_timeout: float,
    ) -> tuple[int, dict[str, str], bytes]:
        """Send one request and read its whole answer within ``seconds``.

        Raises :class:`UpstreamClosed` or an ``OSError`` when the connection fails,
        :class:`ConnectTimeout` when none opens in time, and ``TimeoutError`` when the answer
        is late (the upstream may still be working on it)."""
        head = [f"{method} {self._prefix}{path} HTTP/1.1\r\nhost: {self._authority}\r\n"]
        head += [f"{name}: {value}\r\n" for name, value in headers]
        head.append(f"content-length: {len(body)}\r\n\r\n")
        text = "".join(head)
        lines = len(headers) + 4  # the request line, host, the headers, length, the blank
        if text.count("\n") != lines or text.count("\r") != lines:
            raise ValueError("a line break in the path or a header")  # no injected lines
        request = text.encode("latin-1") + body
        async with asyncio.timeout(seconds), self._slots:
            while True:
                conn = self._reuse()
                reused = conn is not None
                if conn is None:
                    conn = await self._connect(connect_timeout)
                try:
                    status, answer_headers, content, keep = await conn.exchange(request)
                except UpstreamClosed:
                    conn.close()
                    # An idle connection the upstream closed as it was reused: once more on
                    # a fresh one, as any HTTP client does.
                    if reused and not conn.answered:
                        continue
                    raise
                except BaseException:
                    conn.close()
                    raise
                if keep and not conn.closed:
                    self._idle.append(conn)
                else:
                    conn.close()
                return status, answer_headers, content

    def _reuse(self) -> _Connection | None:
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed and conn.transport is not None and not conn.transport.is_closing():
                return conn
        return None

    async def _connect(self, connect_timeout: float) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(connect_timeout):
                _, conn = await loop.create_connection(
                    lambda: _Connection(self._max_answer),
                    self._host,
                    self._port,
                    ssl=self._ssl,
                    server_hostname=self._host if self._ssl is not None else None,
                )
        except TimeoutError as exc:
            raise ConnectTimeout(f"no connection to {self._authority} in time") from exc
        return conn

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
