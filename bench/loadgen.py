"""A lean open-loop HTTP/1.1 load generator (asyncio + uvloop): requests are sent on a fixed
schedule whatever the server does, and latency counts from the scheduled send time, so a
slow server cannot hide its queueing (no coordinated omission)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import uvloop


@dataclass
class OpenLoopResult:
    latencies: list[float] = field(default_factory=list)  # of 200 responses
    by_status: dict[int, list[float]] = field(default_factory=dict)  # every response
    errors: int = 0  # requests with no HTTP response (connection failures)
    sent: int = 0
    elapsed: float = 0.0


async def _request(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes, body: bytes
) -> int:
    writer.write(head + str(len(body)).encode() + b"\r\n\r\n" + body)
    status_line = await reader.readline()
    length = 0
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b""):
            break
        if line[:15].lower() == b"content-length:":
            length = int(line[15:].strip())
    await reader.readexactly(length)
    return int(status_line.split()[1])


async def open_loop(
    host: str,
    port: int,
    *,
    path: str,
    bodies: list[bytes],
    rate: float,
    duration: float,
    connections: int = 256,
) -> OpenLoopResult:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        "Content-Length: "
    ).encode()
    idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    for _ in range(connections):
        idle.put_nowait(await asyncio.open_connection(host, port))
    result = OpenLoopResult()
    total = int(rate * duration)
    start = time.perf_counter() + 0.05
    tasks = []

    async def one(i: int, scheduled: float) -> None:
        conn = await idle.get()
        try:
            status = await _request(*conn, head, bodies[i % len(bodies)])
        except (OSError, asyncio.IncompleteReadError, ValueError):
            result.errors += 1
            conn = await asyncio.open_connection(host, port)
        else:
            latency = time.perf_counter() - scheduled
            result.by_status.setdefault(status, []).append(latency)
            if status == 200:
                result.latencies.append(latency)
        idle.put_nowait(conn)

    for i in range(total):
        scheduled = start + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(one(i, scheduled)))
        result.sent += 1
    await asyncio.gather(*tasks)
    result.elapsed = time.perf_counter() - start
    while not idle.empty():
        _, writer = idle.get_nowait()
        writer.close()
    return result


def run_open_loop(
    host: str, port: int, *, path: str, bodies: list[bytes], rate: float, duration: float
) -> OpenLoopResult:
    return uvloop.run(open_loop(host, port, path=path, bodies=bodies, rate=rate, duration=duration))
