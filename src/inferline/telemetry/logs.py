"""Structured logs: one JSON object per line on stderr.

Records are queued by the caller and written by a background thread, so a slow log reader
never blocks the event loop. The trace and span ids are taken at the call (they live in the
caller's context); the formatting happens in the thread.
"""

from __future__ import annotations

import atexit
import logging
import logging.handlers
import queue
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

import orjson

from inferline.telemetry import tracing
from inferline.telemetry.context import RequestRecord

ACCESS = logging.getLogger("inferline.access")

# Attributes every LogRecord has; anything else on a record came through ``extra``.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
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


_listener: logging.handlers.QueueListener | None = None


def configure(level: str, stream: TextIO | None = None) -> None:
    """JSON lines on ``stream`` (stderr) at ``level``, for inferline and the libraries
    under it."""
    global _listener  # noqa: PLW0603 - one listener per process
    flush()
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    out = logging.StreamHandler(stream or sys.stderr)
    out.setFormatter(JsonFormatter())
    _listener = logging.handlers.QueueListener(records, out, respect_handler_level=False)
    _listener.start()
    atexit.register(_listener.stop)
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
    global _listener  # noqa: PLW0603
    if _listener is not None:
        atexit.unregister(_listener.stop)
        _listener.stop()
        _listener = None


def access(record: RequestRecord, duration: float, extra: dict[str, Any] | None = None) -> None:
    """The access-log line of one request."""
    if not ACCESS.isEnabledFor(logging.INFO):
        return
    fields: dict[str, Any] = {
        "protocol": record.protocol,
        "model": record.model,
        "status": record.status,
        "items": record.items,
        "tokens": record.tokens,
        "queue_wait_ms": round(record.queue_wait * 1000, 3),
        "inference_ms": round(record.inference * 1000, 3),
        "duration_ms": round(duration * 1000, 3),
    }
    if record.texts is not None:
        fields["texts"] = list(record.texts)
    if extra:
        fields.update(extra)
    ACCESS.info("request", extra=fields)
