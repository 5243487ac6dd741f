"""Structured logs: one JSON object per line on stderr.

Records are queued by the caller and written by a background thread, so a slow log reader
never blocks the event loop. The trace and span ids are taken at the call (they live in the
caller's context); the formatting happens in the thread.
"""

from __future__ import annotations

import atexit
import collections
import logging
import logging.handlers
import math
import queue
import sys
import threading
import time
from datetime import UTC, datetime
from typing import Any, NamedTuple, TextIO

import orjson

from inferline.telemetry import tracing
from inferline.telemetry.context import RequestRecord

ACCESS_NAME = "inferline.access"
ACCESS = logging.getLogger(ACCESS_NAME)
REFUSED = ("429", "RESOURCE_EXHAUSTED")  # HTTP, gRPC
HeldKey = tuple[str, str, str, str, str]  # protocol, model, method, path, status
REFUSAL_LINES_PER_S = 20  # Settings.access_log_refusals_per_s's default

# Attributes every LogRecord has; anything else on a record came through ``extra``.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}
_STANDARD.add("color_message")  # uvicorn's copy of the message with terminal colour codes


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": _iso(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:  # rendered by _Enqueue in the caller's thread
            entry["exception"] = record.exc_text
        return orjson.dumps(entry, default=str).decode()


class _TraceIds(logging.Filter):
    """Stamps the current trace and span ids on the record, in the caller's context."""

    def filter(self, record: logging.LogRecord) -> bool:
        ids = tracing.current_ids()
        if ids is not None and not hasattr(record, "trace_id"):
            record.trace_id, record.span_id = ids
        return True


class _Enqueue(logging.handlers.QueueHandler):
    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        # Only render what must be rendered now; the JSON is built in the listener thread.
        record.msg = record.getMessage()
        record.args = None
        if record.exc_info:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
        return record


class _RefusalLines:
    """Lets through at most ``per_second`` access lines for 429s in each second of the clock;
    the others are counted by protocol, model, method and path, and ``take`` hands over the
    counts. Locked: ``access`` is public, and any thread may call it."""

    def __init__(self, per_second: int) -> None:
        self.per_second = per_second
        self._lock = threading.Lock()
        self._second = -1
        self._lines = 0
        self._held: dict[HeldKey, int] = {}
        self._since = 0.0  # when the first held refusal came

    def admit(self, now: float, key: HeldKey) -> bool:
        second = int(now)
        with self._lock:
            if second != self._second:
                self._second, self._lines = second, 0
            if self._lines < self.per_second:
                self._lines += 1
                return True
            if not self._held:
                self._since = now
            self._held[key] = self._held.get(key, 0) + 1
            return False

    def take(self) -> tuple[float, dict[HeldKey, int]] | None:
        with self._lock:
            if not self._held:
                return None
            held, self._held = self._held, {}
            return self._since, held


class _AccessWriter:
    """Access lines, one per request, skip the logging machinery (a LogRecord, handler
    locks, a formatter: that cost 10% of `single` throughput, measured). The caller appends
    a snapshot of the request's figures to a deque; a thread of its own builds, serialises
    and writes the lines in batches, so the event loop pays for a tuple. The thread holds
    the GIL while it builds lines, so it is kept lean too: about 2.8 µs a line, against 9 to
    12 before. Refusals past a limit a second get no line of their own (``access``)."""

    FLUSH_S = 0.1
    SUMMARY_S = 1.0  # how often the refusals held back are counted in the log

    def __init__(self, stream: TextIO, refusal_lines: int = REFUSAL_LINES_PER_S) -> None:
        self._stream = stream
        self._pending: collections.deque[_Access] = collections.deque()
        self.refusals = _RefusalLines(refusal_lines)
        self._summarised = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="access-log", daemon=True)
        self._thread.start()

    def add(self, entry: _Access) -> None:
        self._pending.append(entry)  # deque.append is atomic

    def _run(self) -> None:
        while not self._stop.wait(self.FLUSH_S):
            self._write(final=False)
        self._write(final=True)

    def _write(self, *, final: bool) -> None:
        # Into one bytearray, line by line: keeping each line's bytes until a join cost
        # 3.6 µs a line more (orjson's output buffers, kept alive, defeat malloc's reuse).
        data = bytearray()
        pending = self._pending
        while pending:
            created, snapshot, span = pending.popleft()
            entry = snapshot.entry(_iso(created))
            if span is not None:
                entry["trace_id"], entry["span_id"] = tracing.hex_ids(span)
            data += orjson.dumps(entry, default=str)
            data += b"\n"
        now = time.monotonic()
        if final or now - self._summarised >= self.SUMMARY_S:
            self._summarised = now
            data += self._held_back()
        if not data:
            return
        binary = getattr(self._stream, "buffer", None)
        if binary is not None:  # no decoding to str and encoding back
            self._stream.flush()  # what the text layer holds goes first
            binary.write(data)
            binary.flush()
        else:
            self._stream.write(data.decode())
            self._stream.flush()

    def _held_back(self) -> bytes:
        """One line per protocol, model, method and path with the refusals whose own lines
        were held back since the last such line."""
        taken = self.refusals.take()
        if taken is None:
            return b""
        since, held = taken
        head: dict[str, Any] = {"time": _iso(time.time()), "level": "info"}
        head["logger"] = ACCESS_NAME
        lines = bytearray()
        for (protocol, model, method, path, status), count in held.items():
            entry = {**head, "message": "refusals", "protocol": protocol, "model": model}
            entry |= {"status": status, "count": count, "since": _iso(since)}
            entry |= {k: v for k, v in (("method", method), ("path", path)) if v}
            lines += orjson.dumps(entry) + b"\n"
        return bytes(lines)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


def _iso(created: float) -> str:
    """``created`` as ``datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")``
    gives it, with the same rounding; the date and time of day are formatted once a second
    (a datetime a line cost 1.6 µs, on a thread that holds the GIL while it works)."""
    global _second  # noqa: PLW0603 - one tuple, replaced whole: safe across threads
    fraction, whole = math.modf(created)
    micro = round(fraction * 1e6)  # half to even, as datetime rounds
    second = int(whole)
    if micro >= 1_000_000:
        second, micro = second + 1, micro - 1_000_000
    elif micro < 0:
        second, micro = second - 1, micro + 1_000_000
    cached = _second
    if cached[0] != second:
        stamp = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        cached = _second = (second, stamp)
    return f"{cached[1]}.{micro // 1000:03d}+00:00"


_second: tuple[int, str] = (-1, "")


_listener: logging.handlers.QueueListener | None = None
_access: _AccessWriter | None = None


def configure(
    level: str, stream: TextIO | None = None, refusal_lines: int = REFUSAL_LINES_PER_S
) -> None:
    """JSON lines on ``stream`` (stderr) at ``level``, for inferline and the libraries
    under it; at most ``refusal_lines`` access lines a second for 429s."""
    global _listener, _access  # noqa: PLW0603 - one listener and writer per process
    flush()
    _access = _AccessWriter(stream or sys.stderr, refusal_lines)
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    out = logging.StreamHandler(stream or sys.stderr)
    out.setFormatter(JsonFormatter())
    _listener = logging.handlers.QueueListener(records, out, respect_handler_level=False)
    _listener.start()
    atexit.unregister(flush)
    atexit.register(flush)  # what is still queued at exit is written
    handler = _Enqueue(records)
    handler.addFilter(_TraceIds())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True


def flush() -> None:
    """Write out every queued record (tests; the listener also stops at exit)."""
    global _listener, _access  # noqa: PLW0603
    if _listener is not None:
        _listener.stop()
        _listener = None
    if _access is not None:
        _access.close()
        _access = None


class _Snapshot(NamedTuple):
    """A request's figures at its end, taken on the event loop; the line is built later."""

    protocol: str
    model: str
    status: str
    items: int
    tokens: int
    queue_wait: float
    inference: float
    duration: float
    texts: list[str] | None
    extra: dict[str, Any] | None

    def fields(self) -> dict[str, Any]:
        """The request's fields, without the line's head (for plain logging's ``extra``)."""
        return {k: v for k, v in self.entry("").items() if k not in _HEAD}

    def entry(self, time: str) -> dict[str, Any]:
        """The whole access line: the head, then ``fields()``, built as one dict."""
        entry: dict[str, Any] = {
            "time": time,
            "level": "info",
            "logger": ACCESS_NAME,
            "message": "request",
            "protocol": self.protocol,
            "model": self.model,
            "status": self.status,
            "items": self.items,
            "tokens": self.tokens,
            "queue_wait_ms": round(self.queue_wait * 1000, 3),
            "inference_ms": round(self.inference * 1000, 3),
            "duration_ms": round(self.duration * 1000, 3),
        }
        if self.texts is not None:
            entry["texts"] = self.texts
        if self.extra:
            entry.update(self.extra)
        return entry


_HEAD = ("time", "level", "logger", "message")

# (created, the request's figures, its span context or None)
_Access = tuple[float, _Snapshot, Any]


def access(record: RequestRecord, duration: float, extra: dict[str, Any] | None = None) -> None:
    """The access-log line of one request. Past the limit a second, a 429's line is only
    counted: under overload refusals come by the thousand a second, and a line each cost
    the event loop about 7 µs a refusal, besides the writer's work (docs/observability.md)."""
    if not ACCESS.isEnabledFor(logging.INFO):
        return
    created = time.time()
    writer = _access
    if writer is not None and record.status in REFUSED:
        where = extra or {}
        method, path = where.get("method", ""), where.get("path", "")
        key = (record.protocol, record.model, method, path, record.status)
        if not writer.refusals.admit(created, key):
            return
    snapshot = _Snapshot(
        record.protocol,
        record.model,
        record.status,
        record.items,
        record.tokens,
        record.queue_wait,
        record.inference,
        duration,
        None if record.texts is None else list(record.texts),
        extra,
    )
    if writer is None:  # logging not configured by us (a library user): plain logging
        ACCESS.info("request", extra=snapshot.fields())
        return
    writer.add((created, snapshot, tracing.current_context()))
