"""What one request did, gathered on its way through the layers.

The protocol layer opens a record; the service fills in the model, texts and tokens; the
batcher adds queue wait and engine time. At the end the same record feeds the metrics, the
access log and the span. It travels in a context variable, so no signature changes.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from typing import Any

_current: ContextVar[RequestRecord | None] = ContextVar("inferline_request", default=None)


@dataclass(slots=True, eq=False)
class RequestRecord:
    protocol: str
    model: str = "none"  # a known model name only: labels must stay bounded
    status: str = ""
    items: int = 0
    tokens: int = 0
    queue_wait: float = 0.0  # the longest wait of its texts
    inference: float = 0.0  # the longest engine call among its batches
    texts: Sequence[str] | None = None  # kept only when INFERLINE_LOG_TEXTS is on
    span: Any = None  # its OpenTelemetry span, when tracing is on
    started: float = field(default_factory=time.perf_counter)

    def batched(self, wait: float, duration: float) -> None:
        self.queue_wait = max(self.queue_wait, wait)
        self.inference = max(self.inference, duration)


def current() -> RequestRecord | None:
    return _current.get()


def enter(record: RequestRecord) -> Token[RequestRecord | None]:
    """Make ``record`` current; returns the token for ``leave``."""
    return _current.set(record)


def leave(token: Token[RequestRecord | None]) -> None:
    _current.reset(token)
