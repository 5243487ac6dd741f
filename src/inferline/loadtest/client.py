"""A lean HTTP/1.1 keep-alive client on asyncio streams, and the two load shapes.

Closed loop: ``connections`` workers each send a request as soon as the last one answered.
Open loop: requests go out on a fixed schedule whatever the server does; each takes an idle
connection (opening more up to a cap) and its latency runs from its scheduled time.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]
ERRORS = (OSError, asyncio.IncompleteReadError, ValueError, IndexError)


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    path: str
    tls: ssl.SSLContext | None = None  # set for https:// URLs
    headers: tuple[str, ...] = ()  # extra ``Name: value`` lines, such as an API key's

    @classmethod
    def parse(
        cls,
        url: str,
        path: str = "/predict",
        *,
        tls: ssl.SSLContext | None = None,
        headers: Sequence[str] = (),
    ) -> Target:
        """``http[s]://host[:port][/prefix]``: requests go to prefix + ``path``. An https URL
        uses ``tls``, or the system's trusted CAs when it is None."""
        parts = urlsplit(url if "://" in url else "http://" + url)
        if parts.scheme not in ("http", "https"):
            raise ValueError(f"only http:// and https:// URLs are supported, not {url!r}")
        if not parts.hostname:
            raise ValueError(f"no host in {url!r}")
        secure = parts.scheme == "https"
        if not secure and tls is not None:
            raise ValueError(f"TLS settings need an https:// URL, not {url!r}")
        if secure and tls is None:
            tls = ssl.create_default_context()
        for line in headers:  # never echoed: it may hold a key
            name, colon, _ = line.partition(":")
            if not colon or not name.strip() or "\r" in line or "\n" in line:
                raise ValueError("an extra header must be one 'Name: value' line")
        port = parts.port or (443 if secure else 80)
        return cls(parts.hostname, port, parts.path.rstrip("/") + path, tls, tuple(headers))

    def head(self) -> bytes:
        extra = "".join(f"{line}\r\n" for line in self.headers)
        return (
            f"POST {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Content-Type: application/json\r\n{extra}Content-Length: "
        ).encode()


@dataclass
class Record:
    """What a run saw: latencies (seconds) of 2xx responses, statuses, failures."""

    latencies: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    errors: int = 0
    first_error: str = ""  # what the first request without an answer met
    sent: int = 0
    elapsed: float = 0.0

    def failed(self, exc: BaseException) -> None:
        self.errors += 1
        if not self.first_error:
            self.first_error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


async def connect(target: Target) -> Connection:
    return await asyncio.open_connection(target.host, target.port, ssl=target.tls)


async def request(conn: Connection, head: bytes, body: bytes) -> int:
    """Send one request and read the whole response; return its status."""
    reader, writer = conn
    writer.write(head + str(len(body)).encode() + b"\r\n\r\n" + body)
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionResetError("the server closed the connection")
    length, chunked = 0, False
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b""):
            break
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value.strip())
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if chunked:
        while True:
            size = int((await reader.readline()).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    else:
        await reader.readexactly(length)
    return int(status_line.split()[1])


def close(conn: Connection) -> None:
    conn[1].close()


async def shut(conns: Sequence[Connection]) -> None:
    """Close ``conns`` and wait, briefly, until they are: a TLS connection sends its
    close-notify after ``close()`` returns, while the loop still runs."""
    for conn in conns:
        close(conn)
    waits = (conn[1].wait_closed() for conn in conns)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*waits, return_exceptions=True), 2)


def stale(conn: Connection) -> bool:
    """Whether the server has closed the connection (its FIN has arrived)."""
    reader, writer = conn
    return reader.at_eof() or writer.is_closing()


async def closed_loop(
    target: Target,
    bodies: Sequence[bytes],
    *,
    connections: int,
    duration: float,
    record: Record,
) -> Record:
    head = target.head()
    conns: list[Connection] = []
    try:
        for _ in range(connections):
            conns.append(await connect(target))
    except BaseException:
        await shut(conns)
        raise
    started = time.perf_counter()
    stop_at = started + duration

    async def worker(index: int) -> None:
        conn = conns[index]
        i = index
        while time.perf_counter() < stop_at:
            sent = time.perf_counter()
            record.sent += 1
            try:
                status = await request(conn, head, bodies[i % len(bodies)])
            except ERRORS as exc:
                record.failed(exc)
                close(conn)
                try:
                    conn = await connect(target)
                except OSError:
                    await asyncio.sleep(0.05)
                    continue
            else:
                record.statuses[status] += 1
                if 200 <= status < 300:
                    record.latencies.append(time.perf_counter() - sent)
            i += connections
        conns[index] = conn

    await asyncio.gather(*(worker(n) for n in range(connections)))
    record.elapsed = time.perf_counter() - started
    await shut(conns)
    return record


class Pool:
    """Idle keep-alive connections; opens another while fewer than ``limit`` are out."""

    def __init__(self, target: Target, limit: int) -> None:
        self.target = target
        self.limit = limit
        self.idle: list[Connection] = []
        self.opened = 0
        self._free = asyncio.Condition()

    async def take(self) -> tuple[Connection, bool]:
        """An idle connection that the server has not closed, or a new one; and whether it
        was reused."""
        async with self._free:
            while not self.idle and self.opened >= self.limit:
                await self._free.wait()
            while self.idle:
                conn = self.idle.pop()
                if not stale(conn):
                    return conn, True
                close(conn)  # the server's keep-alive timeout closed it while idle
                self.opened -= 1
            self.opened += 1
        try:
            return await connect(self.target), False
        except OSError:
            await self.give(None)
            raise

    async def give(self, conn: Connection | None) -> None:
        """Return ``conn``, or None for a connection that failed and was closed."""
        async with self._free:
            if conn is None:
                self.opened -= 1
            else:
                self.idle.append(conn)
            self._free.notify()

    async def close(self) -> None:
        idle, self.idle = self.idle, []
        await shut(idle)


async def open_loop(
    target: Target,
    bodies: Sequence[bytes],
    *,
    rate: float,
    duration: float,
    record: Record,
    max_connections: int = 256,
    now: Callable[[], float] = time.perf_counter,
) -> Record:
    """``rate`` requests/s for ``duration`` s; waits for every answer before returning."""
    head = target.head()
    pool = Pool(target, max_connections)
    ready = [(await pool.take())[0] for _ in range(min(8, max_connections))]
    for conn in ready:  # a few open before the clock starts
        await pool.give(conn)
    start = now() + 0.05

    async def one(i: int, scheduled: float) -> None:
        body = bodies[i % len(bodies)]
        for attempt in range(2):
            try:
                conn, reused = await pool.take()
            except OSError as exc:
                record.failed(exc)
                return
            try:
                status = await request(conn, head, body)
                break
            except ERRORS as exc:
                close(conn)
                await pool.give(None)
                # A kept-alive connection that the server closed as the request went out: it
                # never reached the server, so send it once more on a fresh connection, as
                # HTTP clients do. Anything else is the server's failure.
                if not (reused and attempt == 0 and isinstance(exc, ConnectionError)):
                    record.failed(exc)
                    return
        record.statuses[status] += 1
        if 200 <= status < 300:
            record.latencies.append(now() - scheduled)
        await pool.give(conn)

    total = int(rate * duration)
    tasks = []
    for i in range(total):
        scheduled = start + i / rate
        if now() >= start + duration:  # behind a rate this client cannot offer: stop there
            break
        # Always yield: behind schedule, a loop that never did created every task at once
        # and sent nothing.
        await asyncio.sleep(max(0.0, scheduled - now()))
        tasks.append(asyncio.ensure_future(one(i, scheduled)))
        record.sent += 1
    await asyncio.gather(*tasks)
    record.elapsed = now() - start
    await pool.close()
    return record
