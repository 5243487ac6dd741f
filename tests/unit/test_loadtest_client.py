"""`inferline bench`'s open-loop client against servers that close kept-alive connections.

A server closes idle connections after its keep-alive timeout (uvicorn's default is 5 s), so
a client that pools connections meets closed ones; that is not the server failing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from inferline.loadtest import runner
from inferline.loadtest.client import Record, Target, open_loop
from inferline.loadtest.runner import Outcome

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> bool:
    """Read one request; False when the client closed the connection instead."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        await reader.readexactly(length)
    except asyncio.IncompleteReadError:
        return False
    return True


def closing(handler: Handler) -> Handler:
    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            await handler(r, w)
        finally:
            w.close()
            await w.wait_closed()

    return handle


def run(handler: Handler, rate: float, duration: float) -> Record:
    async def scenario() -> Record:
        server = await asyncio.start_server(closing(handler), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            return await open_loop(
                Target("127.0.0.1", port, "/predict"),
                [b'{"text": "x"}'],
                rate=rate,
                duration=duration,
                record=Record(),
            )

    return asyncio.run(scenario())


def test_connections_the_server_closed_while_idle_are_not_used() -> None:
    async def answer_once_then_close(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        if await read_request(r):
            w.write(OK)
            await w.drain()

    record = run(answer_once_then_close, rate=4, duration=1.5)
    assert record.errors == 0
    assert record.statuses == {200: 6}


def test_a_request_lost_to_a_closing_connection_is_sent_again() -> None:
    async def close_on_the_second_request(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        if await read_request(r):
            w.write(OK)
            await w.drain()
            await read_request(r)  # the server closes as this one arrives, answering nothing

    record = run(close_on_the_second_request, rate=20, duration=0.5)
    assert record.errors == 0
    assert record.statuses == {200: 10}


def test_a_server_that_never_answers_is_counted_as_failing() -> None:
    async def close_at_once(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request(r)

    record = run(close_at_once, rate=20, duration=0.25)
    assert record.errors == 5
    assert not record.statuses


def test_a_rate_past_what_the_client_can_offer_ends_at_its_duration() -> None:
    """Behind schedule, the sender never yielded: it made every task (10^8 here) before
    sending anything, and grew without end."""

    async def answer_all(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while await read_request(r):
            w.write(OK)
            await w.drain()

    record = run(answer_all, rate=1e9, duration=0.1)
    assert 0 < record.sent < 10**6 and record.errors == 0
    assert sum(record.statuses.values()) == record.sent


def test_connections_flag_bounds_the_latency_runs_calibration_too() -> None:
    """``--workload latency --connections N`` measured its rate with 64 connections."""
    open_now = peak = 0

    async def slow(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        nonlocal open_now, peak
        open_now += 1
        peak = max(peak, open_now)
        try:
            while await read_request(r):
                await asyncio.sleep(0.005)
                w.write(OK)
                await w.drain()
        finally:
            open_now -= 1

    async def scenario() -> list[Outcome]:
        server = await asyncio.start_server(closing(slow), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            url = f"http://127.0.0.1:{port}"
            return await runner.run(url, ["latency"], ["x"], duration=0.3, connections=3)

    single, latency = asyncio.run(scenario())
    assert single.summary.workload == "single" and latency.summary.workload == "latency"
    assert single.summary.errors == latency.summary.errors == 0
    assert 0 < peak <= 3
