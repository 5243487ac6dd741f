"""A one-line live progress display on stderr (a plain line per step when not a terminal)."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator
from typing import TextIO

from inferline.loadtest.client import Record


@contextlib.asynccontextmanager
async def live(
    label: str,
    record: Record,
    *,
    duration: float,
    texts_per_request: int,
    stream: TextIO | None = None,
    interval: float = 0.5,
) -> AsyncIterator[None]:
    """Show elapsed time, responses, texts/s and errors while the body runs."""
    out = stream if stream is not None else sys.stderr
    tty = out.isatty()
    started = time.perf_counter()

    def line() -> str:
        elapsed = time.perf_counter() - started
        ok = sum(n for status, n in record.statuses.items() if 200 <= status < 300)
        other = sum(record.statuses.values()) - ok
        rate = ok * texts_per_request / elapsed if elapsed > 0 else 0.0
        return (
            f"{label:<8} {min(elapsed, duration):5.1f}/{duration:g} s  {ok:7d} ok  "
            f"{rate:8.1f} texts/s  {other} non-2xx  {record.errors} errors"
        )

    async def tick() -> None:
        while True:
            await asyncio.sleep(interval)
            out.write("\r" + line() + "\x1b[K")
            out.flush()

    task = asyncio.create_task(tick()) if tty else None
    if not tty:
        out.write(f"{label}: running for {duration:g} s\n")
    try:
        yield
    finally:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        out.write(("\r" if tty else "") + line() + ("\x1b[K\n" if tty else "\n"))
        out.flush()
