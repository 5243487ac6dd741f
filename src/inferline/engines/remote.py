"""What the remote engines share: retries with jittered backoff, a circuit breaker that a
periodic health check of the upstream drives, and the headers of every upstream request.

The breaker starts open and closes when the first health check passes. A failed health
check opens it at once (the upstream said it is not ready, or could not be reached in
time); requests that fail ``failure_threshold`` times in a row open it too. While it is
open, readiness is 503 and batches fail at once with 503 instead of waiting on a dead
upstream; the health check keeps running and closes it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from inferline.engines.config import RemoteSpec, display
from inferline.errors import DeadlineExceeded, EngineError, InferlineError, Unavailable
from inferline.telemetry import tracing
from inferline.types import Item

log = logging.getLogger(__name__)

T = TypeVar("T")


class Retry(Exception):
    """An attempt's failure that is safe to retry: the upstream did not run the request
    (connection refused, 503) or asked for a later try (429, with ``retry_after``)."""

    def __init__(self, error: InferlineError, retry_after: float | None = None) -> None:
        super().__init__(str(error))
        self.error = error
        self.retry_after = retry_after


def backoff(spec: RemoteSpec, tries: int) -> float:
    """Exponential, with "equal jitter": half fixed, half random, so that gateways that
    failed together do not retry together, and no retry comes at once."""
    cap = min(spec.max_backoff_s, spec.backoff_s * 2.0 ** (tries - 1))
    return cap / 2 + random.uniform(0, cap / 2)


async def retrying(
    attempt: Callable[[float], Awaitable[T]], spec: RemoteSpec, deadline: float
) -> T:
    """``attempt(deadline)`` until it returns or raises anything but :class:`Retry`, for at
    most ``max_retries`` retries and never past ``deadline`` (``time.monotonic()``): a
    Retry-After that would end past the deadline ends the retries at once."""
    tries = 0
    while True:
        try:
            return await attempt(deadline)
        except Retry as retry:
            tries += 1
            delay = backoff(spec, tries)
            if retry.retry_after is not None:
                delay = max(delay, retry.retry_after)
            if tries > spec.max_retries or time.monotonic() + delay >= deadline:
                raise retry.error from retry.__cause__
            await asyncio.sleep(delay)


class Breaker:
    def __init__(self, name: str, url: str, threshold: int) -> None:
        self.name = name
        self.where = display(url)
        self.threshold = threshold
        self.failures = 0
        self.open = True  # until the first health check passes
        self.reason: str | None = None  # why it is open: the last one logged, or the first

    def check(self) -> None:
        """Fail fast while open."""
        if self.open:
            raise Unavailable(f"{upstream_of(self.name)} is unavailable")

    def success(self) -> None:
        """A batch succeeded: the failures in a row start again from zero."""
        self.failures = 0
        if self.open:
            self.open = False
            log.info("upstream of %s at %s is up", self.name, self.where)

    def healthy(self) -> None:
        """A health check passed: that closes an open breaker, but says nothing of the
        batches failing meanwhile (an upstream whose inference hangs may still answer its
        health check), so a closed breaker keeps counting them."""
        if self.open:
            self.success()

    def failure(self, why: str) -> None:
        self.failures += 1
        if self.failures >= self.threshold:
            self.trip(why)

    def trip(self, why: str) -> None:
        """Open, or stay open: logged when it opens, and when the reason changes while it
        stays open (the first reason of a breaker open since the start is the monitor's to
        log), so that a long outage says what it is without a line per health check."""
        if not self.open:
            self.open = True
            log.warning("upstream of %s at %s is down: %s", self.name, self.where, why)
        elif self.reason is not None and why != self.reason:
            log.warning("upstream of %s at %s is still down: %s", self.name, self.where, why)
        self.reason = why


class Monitor:
    """Checks the upstream every ``interval`` seconds and tells the breaker."""

    def __init__(
        self, breaker: Breaker, check: Callable[[float], Awaitable[None]], interval: float
    ) -> None:
        self.breaker = breaker
        self.check = check
        self.interval = interval
        self.timeout = max(1.0, min(5.0, interval))
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.probe()
        breaker = self.breaker
        if breaker.open:
            log.warning(
                "upstream of %s at %s is not ready yet: %s",
                breaker.name,
                breaker.where,
                breaker.reason,
            )
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def probe(self) -> None:
        try:
            async with asyncio.timeout(self.timeout):
                await self.check(self.timeout)
        except Exception as exc:  # whatever the transport raises: the upstream is not ready
            self.breaker.trip(self._reason(exc))
        else:
            self.breaker.healthy()

    def _reason(self, exc: Exception) -> str:
        """The transport's detail, worded the same each time for the same cause."""
        code, details = getattr(exc, "code", None), getattr(exc, "details", None)
        if callable(code) and callable(details):  # gRPC's: its str() holds a timestamp
            return f"{getattr(code(), 'name', code())}: {details()}"
        if isinstance(exc, TimeoutError) and not str(exc):
            return f"no answer within {self.timeout:g} s"
        if type(exc).__name__.endswith("ProtocolError"):  # h11's, httpx's: may quote a header
            return type(exc).__name__
        return str(exc) or type(exc).__name__

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.probe()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def quiet_httpx() -> None:
    """httpx logs every request at INFO: a line per batch (and per health check) would
    cost more than the request and bury the service's own logs."""
    logging.getLogger("httpx").setLevel(logging.WARNING)


def default_headers(spec: RemoteSpec) -> dict[str, str]:
    """The configured headers and the API key (as ``Authorization: Bearer``); the key is
    read here, once, and appears in no log or error."""
    headers = dict(spec.headers)
    key = spec.api_key()
    if key is not None:
        headers["authorization"] = f"Bearer {key.get_secret_value()}"
    return headers


def trace_headers() -> dict[str, str]:
    """traceparent and tracestate of the current span, for one upstream request."""
    headers: dict[str, str] = {}
    tracing.inject(headers)
    return headers


class BadRequest(EngineError):
    """The upstream refused a batch (a 4xx other than 429): a mismatch between gateway and
    upstream (a model name, a limit), not a sign that the upstream is down."""


def counts_against(exc: BaseException) -> bool:
    """Whether a failed call says that the upstream is down (for the breaker)."""
    return isinstance(exc, Unavailable | DeadlineExceeded | EngineError) and not isinstance(
        exc, BadRequest
    )


def call_deadline(spec: RemoteSpec, items: Sequence[Item]) -> tuple[float, bool]:
    """When a batch's upstream call must end (``time.monotonic()``): ``timeout_s`` from
    now, or the latest of its callers' deadlines when that is sooner, since nobody waits
    past it (``deadline()`` of the batcher's batches; offline callers pass plain lists).

    The flag says that the callers cut the upstream short: they left it less than half of
    ``timeout_s``, and a timeout then says nothing of its health. A deadline only a little
    sooner (the default request deadline equals the default ``timeout_s``, and is counted
    from the request's arrival) still lets a hung upstream open the breaker.
    """
    now = time.monotonic()
    limit = now + spec.timeout_s
    callers = getattr(items, "deadline", None)
    latest = callers() if callable(callers) else None
    if latest is None or latest >= limit:
        return limit, False
    if latest <= now:
        raise DeadlineExceeded("not sent upstream: every caller's deadline had passed")
    return latest, latest - now < spec.timeout_s / 2


def note_failure(breaker: Breaker, exc: BaseException, callers_bound: bool) -> None:
    """Tell the breaker of a failed batch, unless the failure is not the upstream's: a
    refusal of the batch itself, or a timeout at the callers' own (shorter) deadline."""
    if callers_bound and isinstance(exc, DeadlineExceeded):
        return
    if counts_against(exc):
        cause = exc.__cause__
        # The cause's detail (a transport's message) is for the log line only.
        breaker.failure(f"{exc} ({cause})" if cause is not None and str(cause) else str(exc))


class Said(Exception):
    """What an upstream said in an error answer. Its text can hold the upstream's internals
    (a stack trace, addresses), so clients get the status alone; this is the cause of their
    error, for the log lines that show causes (an error id's, the breaker's)."""


class ErrorLog:
    """Logs what an upstream said in its error answers, at most a line a second: one that
    refuses every batch (overloaded, say) would otherwise write a line per batch."""

    def __init__(self, name: str, url: str) -> None:
        self.name = name
        self.where = display(url)
        self._logged = -math.inf  # time.monotonic() of the last line

    def said(self, answer: str, detail: str) -> Said | None:
        """Log ``detail``, the upstream's own words with its ``answer`` (a status), unless a
        line went out in the last second; return it as a cause (None when empty)."""
        if not detail:
            return None
        now = time.monotonic()
        if now - self._logged >= 1.0:
            self._logged = now
            log.warning(
                "upstream of %s at %s answered %s: %r", self.name, self.where, answer, detail[:500]
            )
        return Said(detail[:500])


def upstream_of(name: str) -> str:
    """How errors name a model's upstream: clients learn no internal address (the breaker's
    log lines give it)."""
    return f"the upstream of model {name!r}"


def retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header: a number of seconds, or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
