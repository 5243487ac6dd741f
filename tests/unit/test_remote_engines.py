"""OipEngine and OpenAIEngine against small loopback upstreams that misbehave: an answer
whose body drips past the deadline, error answers that hold the upstream's internals, an
upstream down from the start, values that are not numbers, answers too large to hold,
embeddings indexed wrong. Each test starts the engine for real (its first health check
included) and sends it batches."""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
import orjson
import pytest

from inferline.engines.config import OipSpec, OpenAISpec
from inferline.engines.http1 import UpstreamClosed
from inferline.engines.oip import OipEngine, _Httpx
from inferline.engines.openai import OpenAIEngine
from inferline.engines.remote import BadRequest, Breaker, Monitor
from inferline.errors import DeadlineExceeded, EngineError, Overloaded, Unavailable
from inferline.types import Item
from tests.conftest import free_port

DIM = 4
Reader = asyncio.StreamReader
Writer = asyncio.StreamWriter
Answer = Callable[["Upstream", Reader, Writer], Awaitable[None]]


class Upstream:
    """A loopback HTTP/1.1 server. GETs (health checks) get ``health``, 200 at first; each
    POST gets ``answer``, which writes the whole response itself."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.health = 200
        self.tasks: set[asyncio.Task[Any]] = set()  # one per connection
        self.hung_up = asyncio.Event()  # a client closed its connection mid-answer
        self.url = ""

    async def serve(self, reader: Reader, writer: Writer) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.lower().split(b"\r\n"):
                    if line.startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                await reader.readexactly(length)
                if head.startswith(b"GET") and self.health == 200:
                    writer.write(ok(b'{"data": []}'))
                elif head.startswith(b"GET"):
                    writer.write(b"HTTP/1.1 %d No\r\ncontent-length: 0\r\n\r\n" % self.health)
                else:
                    await self.answer(self, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def gone(self, reader: Reader, seconds: float) -> bool:
        """Wait ``seconds`` for the client to close; say whether it did."""
        try:
            async with asyncio.timeout(seconds):
                closed = await reader.read(1) == b""
        except TimeoutError:
            return False
        except ConnectionResetError:  # closed with our bytes unread: a reset, not an EOF
            closed = True
        if closed:
            self.hung_up.set()
        return closed


@asynccontextmanager
async def upstream(answer: Answer, port: int = 0) -> AsyncIterator[Upstream]:
    up = Upstream(answer)
    server = await asyncio.start_server(up.serve, "127.0.0.1", port)
    up.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        yield up
    finally:
        server.close()
        for task in up.tasks:  # connections a client still keeps
            task.cancel()
        await asyncio.gather(*up.tasks, return_exceptions=True)


def ok(body: bytes, content_type: bytes = b"application/json") -> bytes:
    head = b"HTTP/1.1 200 OK\r\ncontent-type: %s\r\ncontent-length: %d\r\n\r\n"
    return head % (content_type, len(body)) + body


def items(*texts: str) -> list[Item]:
    return [Item(np.zeros(1, dtype=np.int64), text=text) for text in texts]


def oip_answer(rows: Any) -> bytes:
    tensor = {"name": "embedding", "datatype": "FP32", "shape": [len(rows), DIM], "data": rows}
    return orjson.dumps({"outputs": [tensor]})


def openai_answer(rows: Any) -> bytes:
    data = [{"object": "embedding", "index": i, "embedding": row} for i, row in enumerate(rows)]
    return orjson.dumps({"object": "list", "data": data})


CLIENTS = ["oip-http1", "oip-httpx", "openai"]


@asynccontextmanager
async def engine(client: str, url: str, **fields: Any) -> AsyncIterator[Any]:
    """A started engine of model ``embedding`` (DIM wide) at ``url``."""
    fields = {"health_interval_s": 60, "backoff_s": 0.01, **fields}
    started: OipEngine | OpenAIEngine
    if client == "openai":
        spec = OpenAISpec(engine="openai", url=url + "/v1", output_dim=DIM, **fields)
        started = OpenAIEngine("embedding", spec, output_dim=DIM, max_tokens=16)
    else:
        http2 = client == "oip-httpx"
        oip = OipSpec(engine="oip", url=url, binary_data=False, http2=http2, **fields)
        started = OipEngine("embedding", oip, output_dim=DIM, max_tokens=16)
    await started.start()
    try:
        yield started
    finally:
        await started.close()


def answer_of(client: str, rows: Any) -> bytes:
    return openai_answer(rows) if client == "openai" else oip_answer(rows)


@pytest.mark.parametrize("client", CLIENTS)
def test_a_body_that_drips_past_the_deadline_ends_the_call(client: str) -> None:
    """Headers at once, then the body a little at a time: the deadline bounds the whole
    answer, not its head, and the gateway hangs up at it."""
    body = answer_of(client, [[0.5] * DIM])

    async def drip(up: Upstream, reader: Reader, writer: Writer) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(body))
        for byte in body:
            writer.write(bytes([byte]))
            await writer.drain()
            if await up.gone(reader, 0.05):
                return

    async def case() -> None:
        async with upstream(drip) as up, engine(client, up.url, timeout_s=0.5) as e:
            with pytest.raises(DeadlineExceeded, match="did not answer in time"):
                await e.infer(items("a"))
            await asyncio.wait_for(up.hung_up.wait(), 10)

    asyncio.run(case())


LEAK = 'Traceback (most recent call last):\n  File "/srv/triton/backend.py"\nOSError: 10.1.2.3:8001'


@pytest.mark.parametrize("client", ["oip-http1", "openai"])
@pytest.mark.parametrize(
    ("status", "error"),
    [
        (429, Overloaded),
        (503, Unavailable),
        (504, DeadlineExceeded),
        (500, EngineError),
        (400, BadRequest),
    ],
)
def test_an_upstreams_error_text_goes_to_the_log_not_to_clients(
    client: str, status: int, error: type[Exception], caplog: pytest.LogCaptureFixture
) -> None:
    """429, 503 and 504 reach clients as they are, and every error's text reaches the job
    queue's results: they name the upstream and the status, and the log has the rest, a
    line a second at most."""
    calls = 20

    async def refuse(up: Upstream, reader: Reader, writer: Writer) -> None:
        body = orjson.dumps({"error": LEAK})
        head = b"HTTP/1.1 %d No\r\nretry-after: 100\r\ncontent-length: %d\r\n\r\n"
        writer.write(head % (status, len(body)) + body)

    async def case() -> None:
        fields = {"max_retries": 0, "failure_threshold": 100}
        async with upstream(refuse) as up, engine(client, up.url, **fields) as e:
            for _ in range(calls):
                with pytest.raises(error) as refused:
                    await e.infer(items("a"))
                assert str(refused.value) == f"the upstream of model 'embedding' answered {status}"
                assert "10.1.2.3" in str(refused.value.__cause__)  # for the error id's line

    with caplog.at_level(logging.WARNING, logger="inferline.engines"):
        asyncio.run(case())
    lines = [r.getMessage() for r in caplog.records if "10.1.2.3:8001" in r.getMessage()]
    assert 1 <= len(lines) < calls, lines  # not a line per batch
    assert lines[0].startswith("upstream of embedding at http://127.0.0.1:")
    assert f"answered {status}: 'Traceback" in lines[0]


async def unused(up: Upstream, reader: Reader, writer: Writer) -> None:
    raise AssertionError("no batch is sent here")


def test_an_upstream_down_from_the_start_says_why_and_again_when_that_changes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"

    async def case() -> None:
        async with engine("oip-http1", url) as e:  # nothing listens yet: refused
            monitor = e._monitor
            assert monitor is not None and not e.ready
            await monitor.probe()  # the same reason: no new line
            async with upstream(unused, port) as up:
                up.health = 503
                for _ in range(3):
                    await monitor.probe()  # another reason: one line, not three
                up.health = 200
                await monitor.probe()
                assert e.ready

    with caplog.at_level(logging.INFO, logger="inferline.engines.remote"):
        asyncio.run(case())
    lines = [r.getMessage() for r in caplog.records if r.name == "inferline.engines.remote"]
    where = f"upstream of embedding at {url}"
    assert len(lines) == 3, lines
    assert lines[0].startswith(f"{where} is not ready yet: ")
    assert len(lines[0]) > len(f"{where} is not ready yet: ") + 5  # the transport's words
    assert lines[1] == f"{where} is still down: /v2/health/ready answered 503"
    assert lines[2] == f"{where} is up"


def test_a_protocol_errors_words_stay_out_of_the_reason() -> None:
    """h11's error quotes the header value it refused: a key, in the breaker's log line."""

    class LocalProtocolError(Exception):
        pass

    monitor = Monitor(Breaker("embedding", "http://b", 1), unused_check, 5.0)
    reason = monitor._reason(LocalProtocolError("Illegal header value b's3cret '"))
    assert reason == "LocalProtocolError"


async def unused_check(seconds: float) -> None:
    raise AssertionError("not called")


def test_grpcs_reasons_count_as_the_same_though_their_text_has_a_timestamp(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from grpc import StatusCode
    from grpc.aio import AioRpcError, Metadata

    times = iter(range(100))

    async def check(seconds: float) -> None:
        debug = f'UNKNOWN:Error received from peer {{created_time:"{next(times)}"}}'
        details = "failed to connect to all addresses; last error: 10.1.2.3:8001: refused"
        raise AioRpcError(StatusCode.UNAVAILABLE, Metadata(), Metadata(), details, debug)

    async def case() -> None:
        monitor = Monitor(Breaker("embedding", "triton:8001", 3), check, 60)
        await monitor.start()
        for _ in range(3):
            await monitor.probe()
        await monitor.close()

    with caplog.at_level(logging.INFO, logger="inferline.engines.remote"):
        asyncio.run(case())
    assert [r.getMessage() for r in caplog.records] == [
        "upstream of embedding at triton:8001 is not ready yet: UNAVAILABLE: failed to connect "
        "to all addresses; last error: 10.1.2.3:8001: refused"
    ]


def binary_answer(client: str, rows: list[list[float]]) -> tuple[bytes, int]:
    """``rows`` as raw little-endian FP32, Triton's binary extension or OpenAI's base64, and
    the length of the JSON header before the raw bytes (0 for OpenAI)."""
    raw = [np.asarray(row, dtype="<f4").tobytes() for row in rows]
    if client == "openai":
        return openai_answer([base64.b64encode(row).decode() for row in raw]), 0
    size = {"binary_data_size": len(raw) * len(raw[0])}
    tensor = {"name": "embedding", "datatype": "FP32", "shape": [len(rows), DIM]}
    header = orjson.dumps({"outputs": [tensor | {"parameters": size}]})
    return header + b"".join(raw), len(header)


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("value", ["null", "past float32", "NaN", "inf"])
def test_values_that_are_not_numbers_are_refused(client: str, value: str) -> None:
    """Not passed on as null, with 200, as if they were embeddings."""
    good = [0.5] * (DIM - 1)
    header = 0
    if value == "null":
        answer = answer_of(client, [[0.5] * DIM, [None, *good]])
    elif value == "past float32":
        answer = answer_of(client, [[0.5] * DIM, [1e300, *good]])
    else:
        answer, header = binary_answer(client, [[0.5] * DIM, [float(value.lower()), *good]])

    async def give(up: Upstream, reader: Reader, writer: Writer) -> None:
        head = b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n" % len(answer)
        if header:
            head += b"inference-header-content-length: %d\r\n" % header
        writer.write(head + b"\r\n" + answer)

    async def case() -> None:
        async with upstream(give) as up, engine(client, up.url) as e:
            with pytest.raises(EngineError, match="NaN, infinite or null values"):
                await e.infer(items("a", "b"))

    asyncio.run(case())


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_an_embeddings_answer_far_larger_than_asked_for_is_refused(framing: str) -> None:
    """A valid answer, padded to a megabyte: far more than 2 embeddings of 4 floats take. It
    is refused by its Content-Length, or once the read goes past the bound, not held whole."""
    answer = orjson.loads(openai_answer([[0.5] * DIM, [0.25] * DIM]))
    padded = orjson.dumps(answer | {"pad": "x" * 1024 * 1024})

    async def give(up: Upstream, reader: Reader, writer: Writer) -> None:
        if framing == "content-length":
            writer.write(ok(padded))
        else:
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
            for i in range(0, len(padded), 65536):
                piece = padded[i : i + 65536]
                writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                await writer.drain()
            writer.write(b"0\r\n\r\n")
        await up.gone(reader, 10)

    async def case() -> None:
        async with upstream(give) as up, engine("openai", up.url) as e:
            with pytest.raises(EngineError, match=r"answered over \d+ bytes, more than 2 emb"):
                await e.infer(items("a", "b"))
            await asyncio.wait_for(up.hung_up.wait(), 10)  # its connection closed, not kept

    asyncio.run(case())


@pytest.mark.parametrize("indices", [[0, 0, 0], [0, 1, 1], [1, 2, 3], [0, True, 2], [0, 1.0, 2]])
def test_embeddings_whose_indices_are_not_each_text_once_are_refused(indices: list[Any]) -> None:
    """Else rows would go to texts they are not of, in the list's order, with 200."""
    data = [{"object": "embedding", "index": i, "embedding": [0.5] * DIM} for i in indices]

    async def give(up: Upstream, reader: Reader, writer: Writer) -> None:
        writer.write(ok(orjson.dumps({"object": "list", "data": data})))

    async def case() -> None:
        async with upstream(give) as up, engine("openai", up.url) as e:
            with pytest.raises(EngineError, match="whose indices are not 0 to 2"):
                await e.infer(items("a", "b", "c"))

    asyncio.run(case())


def test_an_oip_answer_over_http2_is_bounded_as_over_http1() -> None:
    """httpx read any answer whole; Http1Pool stops at its bound (256 MiB for OIP)."""

    async def give(up: Upstream, reader: Reader, writer: Writer) -> None:
        writer.write(ok(b"x" * 1024))
        await up.gone(reader, 10)

    async def case() -> None:
        async with upstream(give) as up:
            spec = OipSpec(engine="oip", url=up.url, http2=True)
            client = _Httpx(spec, None, max_answer=512)
            with pytest.raises(UpstreamClosed, match="answer over 512 bytes"):
                await client.request("POST", "/", [], b"{}", seconds=5, connect_timeout=1)
            await client.aclose()
            await asyncio.wait_for(up.hung_up.wait(), 10)

    asyncio.run(case())
