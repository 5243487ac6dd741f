"""A lean open-loop HTTP/1.1 load generator (asyncio protocols + uvloop): requests are sent
on a fixed schedule whatever the server does, and latency counts from the scheduled send
time, so a slow server cannot hide its queueing (no coordinated omission).

It shares the machine with the server, so it is written for low CPU per request: no task,
queue or stream per request; each connection is a protocol that parses its own responses,
and one timer a millisecond sends whatever has come due.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import cast

import uvloop

TICK_S = 0.001  # the send timer's period: sends come due at most this late


@dataclass
class OpenLoopResult:
    latencies: list[float] = field(default_factory=list)  # of 200 responses
    by_status: dict[int, list[float]] = field(default_factory=dict)  # every response
    errors: int = 0  # requests with no HTTP response (connection failures)
    sent: int = 0
    elapsed: float = 0.0


class _Connection(asyncio.Protocol):
    """One keep-alive connection with at most one request in flight."""

    def __init__(self, gen: _Generator) -> None:
        self.gen = gen
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.scheduled = 0.0  # of the request in flight; 0 when idle

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.gen.ready(self)

    def send(self, request: bytes, scheduled: float) -> None:
        assert self.transport is not None
        self.scheduled = scheduled
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buffer[:end]).lower()
        length = 0
        at = head.find(b"\r\ncontent-length:")
        if at >= 0:
            stop = head.find(b"\r\n", at + 2)
            length = int(head[at + 17 : stop if stop >= 0 else len(head)])
        if len(self.buffer) < end + 4 + length:
            return
        status = int(head[9:12])
        del self.buffer[: end + 4 + length]
        scheduled, self.scheduled = self.scheduled, 0.0
        self.gen.done(self, status, scheduled)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.gen.lost(self)


class _Generator:
    def __init__(
        self, host: str, port: int, requests: list[bytes], *, rate: float, total: int
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.host, self.port = host, port
        self.requests = requests
        self.rate, self.total = rate, total
        self.result = OpenLoopResult()
        self.idle: deque[_Connection] = deque()
        self.waiting: deque[tuple[int, float]] = deque()  # due, but no idle connection
        self.answered = 0
        self.start = 0.0
        self.finished: asyncio.Future[None] = self.loop.create_future()

    async def connect(self) -> None:
        await self.loop.create_connection(lambda: _Connection(self), self.host, self.port)

    def ready(self, conn: _Connection) -> None:
        """A connection is free: give it the oldest request that is due, if any."""
        if self.waiting:
            i, scheduled = self.waiting.popleft()
            conn.send(self.requests[i % len(self.requests)], scheduled)
        else:
            self.idle.append(conn)

    def tick(self) -> None:
        now = time.perf_counter()
        due = min(self.total, int((now - self.start) * self.rate) + 1)
        while self.result.sent < due:
            i = self.result.sent
            scheduled = self.start + i / self.rate
            self.result.sent += 1
            if self.idle:
                self.idle.popleft().send(self.requests[i % len(self.requests)], scheduled)
            else:
                self.waiting.append((i, scheduled))
        if self.result.sent < self.total:
            self.loop.call_later(TICK_S, self.tick)

    def done(self, conn: _Connection, status: int, scheduled: float) -> None:
        latency = time.perf_counter() - scheduled
        self.result.by_status.setdefault(status, []).append(latency)
        if status == 200:
            self.result.latencies.append(latency)
        self._answered()
        self.ready(conn)

    def lost(self, conn: _Connection) -> None:
        if conn in self.idle:
            self.idle.remove(conn)
        if conn.scheduled:
            self.result.errors += 1
            self._answered()
        if not self.finished.done():
            self.loop.create_task(self.connect())  # keep the pool at its size

    def _answered(self) -> None:
        self.answered += 1
        if self.answered >= self.total and not self.finished.done():
            self.finished.set_result(None)


async def open_loop(
    host: str,
    port: int,
    *,
    path: str,
    bodies: list[bytes],
    rate: float,
    duration: float,
    connections: int = 256,
    headers: Sequence[str] = (),
) -> OpenLoopResult:
    """``headers`` are extra ``Name: value`` lines sent with every request."""
    extra = "".join(f"{line}\r\n" for line in headers)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n{extra}"
        "Content-Length: "
    ).encode()
    requests = [head + str(len(b)).encode() + b"\r\n\r\n" + b for b in bodies]
    gen = _Generator(host, port, requests, rate=rate, total=int(rate * duration))
    for _ in range(connections):
        await gen.connect()
    gen.start = time.perf_counter() + 0.05
    gen.loop.call_at(gen.loop.time() + 0.05, gen.tick)
    if gen.total:
        await gen.finished
    gen.result.elapsed = time.perf_counter() - gen.start
    for conn in list(gen.idle):
        if conn.transport is not None:
            conn.transport.close()
    return gen.result


def run_open_loop(
    host: str, port: int, *, path: str, bodies: list[bytes], rate: float, duration: float
) -> OpenLoopResult:
    return uvloop.run(open_loop(host, port, path=path, bodies=bodies, rate=rate, duration=duration))
