"""engines/http1.py against small real servers on loopback sockets: what it sends, the
answer forms it reads, keep-alive and its failures, limits and timeouts."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import pytest

from inferline.engines.http1 import ConnectTimeout, Http1Pool, UpstreamClosed

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def run(case: Callable[[], Coroutine[Any, Any, None]]) -> Callable[[], None]:
    def test() -> None:
        asyncio.run(case())

    test.__name__ = case.__name__
    return test


class Upstream:
    """A loopback server; ``handler`` runs once per connection, and every request head it
    reads is kept."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.heads: list[bytes] = []
        self.bodies: list[bytes] = []
        self.server: asyncio.Server | None = None
        self.url = ""

    async def __aenter__(self) -> Upstream:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def read_request(self, reader: asyncio.StreamReader) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        self.heads.append(head)
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        self.bodies.append(await reader.readexactly(length))


def pool(url: str, connections: int = 4, max_answer: int = 1 << 20) -> Http1Pool:
    return Http1Pool(url, ssl_context=None, max_connections=connections, max_answer=max_answer)


async def call(p: Http1Pool, body: bytes = b"{}", seconds: float = 5) -> tuple[int, Any, bytes]:
    headers = [("content-type", "application/json"), ("x-route", "a")]
    return await p.request("POST", "/v2/x", headers, body, seconds=seconds, connect_timeout=1)


OK = b'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 7\r\n\r\n{"a":1}'


@run
async def test_request_and_answer_on_one_kept_connection() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await upstream.read_request(reader)
            writer.write(OK)

    async with Upstream(handler) as upstream:
        p = pool(upstream.url + "/prefix/")
        for i in range(3):
            status, headers, body = await call(p, b'{"n": %d}' % i)
            assert (status, body, headers["content-type"]) == (200, b'{"a":1}', "application/json")
        await p.aclose()
    assert upstream.connections == 1
    host = upstream.url.removeprefix("http://").encode()
    assert upstream.heads[0].split(b"\r\n")[:2] == [b"POST /prefix/v2/x HTTP/1.1", b"host: " + host]
    assert b"x-route: a\r\n" in upstream.heads[0]
    assert upstream.bodies == [b'{"n": 0}', b'{"n": 1}', b'{"n": 2}']


@run
async def test_a_chunked_answer_in_pieces_is_read_whole() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await upstream.read_request(reader)
        writer.write(b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 2\r\n")
        writer.write(b"transfer-encoding: chunked\r\n\r\n5\r\nhello\r\n")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(b"6\r\n world\r\n0\r\n\r\n")
        await writer.drain()
        await reader.read()  # the client keeps it

    async with Upstream(handler) as upstream:
        p = pool(upstream.url)
        status, headers, body = await call(p)
        await p.aclose()
    assert (status, body, headers["retry-after"]) == (429, b"hello world", "2")


@run
async def test_connection_close_is_not_reused() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await upstream.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok")

    async with Upstream(handler) as upstream:
        p = pool(upstream.url)
        assert [(await call(p))[2] for _ in range(3)] == [b"ok"] * 3
        await p.aclose()
    assert upstream.connections == 3


@run
async def test_an_idle_connection_the_upstream_closed_is_replaced() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await upstream.read_request(reader)
        writer.write(OK)  # keep-alive, then closes after a while without saying so
        await writer.drain()
        await asyncio.sleep(0.05)

    async with Upstream(handler) as upstream:
        p = pool(upstream.url)
        assert (await call(p))[0] == 200
        await asyncio.sleep(0.2)
        assert (await call(p))[0] == 200
        await p.aclose()
    assert upstream.connections == 2


@run
async def test_a_reused_connection_that_fails_unanswered_is_retried_once_fresh() -> None:
    first = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await upstream.read_request(reader)
        writer.write(OK)
        await writer.drain()
        if not first.is_set():
            first.set()
            await reader.readuntil(b"\r\n\r\n")  # the second request: closed unanswered
            return
        await reader.read()

    async with Upstream(handler) as upstream:
        p = pool(upstream.url)
        assert (await call(p))[0] == 200
        assert (await call(p))[0] == 200
        await p.aclose()
    assert upstream.connections == 2


@run
async def test_a_fresh_connection_closed_mid_answer_fails() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await upstream.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npartial")

    async with Upstream(handler) as upstream:
        p = pool(upstream.url)
        with pytest.raises(UpstreamClosed, match="closed before the answer"):
            await call(p)
        await p.aclose()
    assert upstream.connections == 1  # nothing was answered whole: not retried here


@run
async def test_an_answer_without_a_length_ends_at_the_close() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await upstream.read_request(reader)
        writer.write(b'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n{"a":')
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(b"1}")  # then the close ends it

    async with Upstream(handler) as upstream:
        p = pool(upstream.url)
        assert [(await call(p))[::2] for _ in range(2)] == [(200, b'{"a":1}')] * 2
        await p.aclose()
    assert upstream.connections == 2  # such a connection is not kept


@run
async def test_an_answer_without_a_length_cut_by_a_reset_fails() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await upstream.read_request(reader)
        writer.write(b'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n{"a":')
        await writer.drain()
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        writer.transport.abort()  # RST: the body may be cut short

    async with Upstream(handler) as upstream:
        p = pool(upstream.url)
        with pytest.raises(UpstreamClosed, match="closed before the answer"):
            await call(p)
        await p.aclose()


@run
async def test_garbage_and_oversized_answers_fail() -> None:
    answers = [
        b"NOT HTTP AT ALL\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: 64\r\n\r\n" + b"x" * 64,
    ]

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await upstream.read_request(reader)
        writer.write(answers[upstream.connections - 1])
        await reader.read()

    async with Upstream(handler) as upstream:
        p = pool(upstream.url, max_answer=32)
        with pytest.raises(UpstreamClosed, match="bad answer"):
            await call(p)
        with pytest.raises(UpstreamClosed, match="over 32 bytes"):
            await call(p)
        await p.aclose()


@run
async def test_a_late_answer_times_out_and_a_refused_connection_raises() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await upstream.read_request(reader)
        await reader.read()  # never answers

    async with Upstream(handler) as upstream:
        p = pool(upstream.url)
        with pytest.raises(TimeoutError) as late:
            await call(p, seconds=0.1)
        assert not isinstance(late.value, ConnectTimeout)  # it was sent: not retryable
        await p.aclose()
    with pytest.raises(ConnectionRefusedError):
        await call(pool(upstream.url))


@run
async def test_no_connection_in_time_is_a_connect_timeout() -> None:
    # A listener that never accepts, with its backlog full: further connects hang.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    try:
        for _ in range(4):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", port))
            fillers.append(s)
        p = pool(f"http://127.0.0.1:{port}")
        with pytest.raises(ConnectTimeout):
            await p.request("GET", "/", [], b"", seconds=5, connect_timeout=0.2)
    finally:
        for s in fillers:
            s.close()
        listener.close()


@run
async def test_at_most_max_connections_are_open() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await upstream.read_request(reader)
            await asyncio.sleep(0.02)
            writer.write(OK)

    async with Upstream(handler) as upstream:
        p = pool(upstream.url, connections=2)
        answers = await asyncio.gather(*(call(p) for _ in range(8)))
        await p.aclose()
    assert [a[0] for a in answers] == [200] * 8
    assert upstream.connections == 2


@run
async def test_a_header_with_a_line_break_is_refused_before_sending() -> None:
    p = pool("http://127.0.0.1:9")  # never connected to
    bad = [("x-route", "a\r\nx-injected: 1")]
    with pytest.raises(ValueError, match="line break"):
        await p.request("GET", "/", bad, b"", seconds=1, connect_timeout=1)


def test_only_http_urls() -> None:
    with pytest.raises(ValueError, match="not an http"):
        pool("grpc://127.0.0.1:8001")
