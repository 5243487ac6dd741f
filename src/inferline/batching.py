"""The dynamic batcher: one per model, between the protocols and the engine.

Items wait in a bounded queue. A batch is cut when a lane is free and either the batch is
full (count or padded tokens), or the oldest waiting item has waited ``max_delay``, or it
came after a quiet spell of ``max_delay`` (then nothing is worth waiting for). The oldest
item always goes into the next batch (no starvation); the rest are its nearest neighbours by
length, so padding stays low. Expired and cancelled items leave the queue before the engine
sees them. Results are set only on futures that are not done yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from inferline.engines.packing import packed_tokens
from inferline.errors import (
    DeadlineExceeded,
    EngineError,
    InferlineError,
    InvalidInput,
    NotRun,
    Overloaded,
    Unavailable,
)
from inferline.grouping import fill_rows, grow
from inferline.telemetry import context, tracing
from inferline.telemetry.context import RequestRecord
from inferline.types import FloatArray, Item

# How many of the oldest waiting items a batch is chosen from: wide enough to find texts of
# similar length, narrow enough that choosing stays cheap.
WINDOW = 256

InferFn = Callable[[Sequence[Item]], Awaitable[Sequence[FloatArray | BaseException]]]
BatchHook = Callable[["BatchReport"], None]


LATE = "before the model answered"  # a deadline that passed while its batch ran


@dataclass(frozen=True, slots=True)
class BatcherLimits:
    """Defaults match Settings' (docs there); the service builds these from Settings."""

    max_batch_size: int = 16
    max_batch_tokens: int = 8192
    max_delay: float = 0.002
    max_padding_ratio: float = 1.05
    min_batch_size: int = 2
    max_queue_items: int = 2048
    max_queue_tokens: int = 262_144
    concurrency: int = 3
    pack_width: int = 0  # >0: the engine packs texts into rows this wide (fill_rows)
    pack_rows: int = 6


@dataclass(frozen=True, slots=True)
class BatchReport:
    """What one engine call did; handed to the optional hook (metrics, benchmarks)."""

    size: int
    tokens: int
    padded_tokens: int
    queue_waits: Sequence[float]
    duration: float
    failed: bool


@dataclass(eq=False, slots=True)
class _Entry:
    seq: int
    item: Item
    future: asyncio.Future[FloatArray]
    enqueued: float
    deadline: float | None
    record: RequestRecord | None  # the request it belongs to: gets its wait and engine time
    dense: bool  # the text before it came less than max_delay earlier
    timer: asyncio.TimerHandle | None = field(default=None)


def _seq(entry: _Entry) -> int:
    return entry.seq


def _fail(batch: list[_Entry], exc: Exception) -> None:
    """Fail the entries still waiting with the batch's error: an InferlineError as it is,
    anything else as an opaque EngineError."""
    error = exc if isinstance(exc, InferlineError) else EngineError("inference failed")
    if error is not exc:
        error.__cause__ = exc
    now = time.monotonic()
    for entry in batch:
        if entry.future.done():
            continue
        if entry.deadline is not None and entry.deadline <= now:
            # A failure at the caller's deadline (a remote engine ends its call there)
            # reads as the timer's 504 would, whichever of the two came first.
            entry.future.set_exception(DeadlineExceeded(f"the deadline passed {LATE}"))
        else:
            entry.future.set_exception(error)


class _Batch(list[Item]):
    """A batch's items, and ``live()``: which are still wanted. One batch a model may wait
    for a lane in the engine's pool; an engine that runs batches on a pool of lanes calls
    ``live()`` as the lane takes it up and answers NotRun for the rest (engines/onnx.py),
    so that a text whose deadline passed, or whose caller left, meanwhile is not run."""

    __slots__ = ("_entries",)

    def __init__(self, entries: list[_Entry]) -> None:
        super().__init__(entry.item for entry in entries)
        self._entries = entries

    def deadline(self) -> float | None:
        """The latest of its callers' deadlines, or None if one has none: past it nobody
        waits for the batch, so a remote engine need not wait for its upstream longer."""
        deadlines = [e.deadline for e in self._entries]
        return None if None in deadlines else max(d for d in deadlines if d is not None)

    def live(self) -> list[bool]:
        # Read on a lane's thread: done() and the deadline are plain reads, and at worst a
        # text cancelled at this instant still runs, as it would have a moment later.
        now = time.monotonic()
        return [
            not e.future.done() and (e.deadline is None or e.deadline > now) for e in self._entries
        ]


class Batcher:
    """Groups submitted items into engine calls. Use ``start()`` once, ``close()`` at the end."""

    def __init__(
        self,
        infer: InferFn,
        limits: BatcherLimits,
        *,
        name: str = "model",
        engine: str = "engine",
        on_batch: BatchHook | None = None,
    ) -> None:
        self.name = name
        self.engine = engine
        self.limits = limits
        self._infer = infer
        self._on_batch = on_batch
        self._pending: dict[int, _Entry] = {}
        # Taken into a batch, with a deadline timer still to fire or be cancelled: a caller
        # whose deadline passes while its batch runs gets its 504 then, not when it ends.
        self._inflight: dict[int, _Entry] = {}
        self._queued_tokens = 0
        self._seq = itertools.count()
        self._wakeup = asyncio.Event()
        self._full = asyncio.Event()
        self._slots = asyncio.Semaphore(limits.concurrency)
        self._running: set[asyncio.Task[None]] = set()
        self._loop_task: asyncio.Task[None] | None = None
        self._closing = False
        self._rate = 0.0  # texts/s, smoothed; drives Retry-After
        self._refusal: tuple[BatcherLimits | None, Overloaded | None] = (None, None)
        self._last_arrival = -math.inf

    # -- public -----------------------------------------------------------------------------

    @property
    def queue_depth(self) -> int:
        return len(self._pending)

    @property
    def drain_rate(self) -> float:
        """Texts a second, smoothed over recent batches (0 before any): drives Retry-After."""
        return self._rate

    def forget_drain_rate(self) -> None:
        """Start the drain rate afresh: a warm-up's few short texts say nothing of it under
        real load, and would weigh on Retry-After for the first seconds."""
        self._rate = 0.0

    @property
    def queued_tokens(self) -> int:
        return self._queued_tokens

    def start(self) -> None:
        if self._loop_task is None:
            self._loop_task = asyncio.get_running_loop().create_task(self._run())

    async def submit(self, item: Item, deadline: float | None = None) -> FloatArray:
        """Run one item; ``deadline`` is a ``time.monotonic()`` instant."""
        (future,) = self.enqueue([item], deadline)
        try:
            return await future
        finally:
            # A raised error's traceback holds this frame, and the future holds the error:
            # without this, every 504 or failure would leave a reference cycle behind.
            del future

    async def submit_many(
        self, items: Sequence[Item], deadline: float | None = None
    ) -> list[FloatArray]:
        """Run several items, admitted together; if one fails, the rest are cancelled."""
        futures = self.enqueue(items, deadline)
        rows: list[FloatArray] = []
        try:
            for future in futures:
                rows.append(await future)
            return rows
        finally:
            for future in futures:
                future.cancel()  # no-op on done futures; frees queue slots of the rest
            del futures, future  # as in submit: no cycle through a raised error

    def enqueue(
        self, items: Sequence[Item], deadline: float | None
    ) -> list[asyncio.Future[FloatArray]]:
        """Admit all items or none, and return one future per item."""
        self._admit(items, deadline)
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        record = context.current()
        dense = now - self._last_arrival <= self.limits.max_delay
        self._last_arrival = now
        futures: list[asyncio.Future[FloatArray]] = []
        for item in items:
            seq = next(self._seq)
            entry = _Entry(seq, item, loop.create_future(), now, deadline, record, dense)
            if deadline is not None:
                entry.timer = loop.call_later(deadline - now, self._expire, seq)
            entry.future.add_done_callback(functools.partial(self._on_done, seq))
            self._pending[seq] = entry
            self._queued_tokens += item.tokens
            futures.append(entry.future)
        self._wakeup.set()
        if self._is_full():
            self._full.set()
        return futures

    async def close(self, grace: float = 30.0) -> None:
        """Refuse new work, let queued and running batches finish within ``grace``."""
        self._closing = True
        self._wakeup.set()
        self._full.set()
        deadline = time.monotonic() + grace
        loop_task = self._loop_task
        if loop_task is not None and not loop_task.done():  # a second close: nothing to wait
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(loop_task), grace)
            loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loop_task
        for entry in list(self._pending.values()):
            if not entry.future.done():
                entry.future.set_exception(Unavailable("the service is shutting down"))
        if self._running:
            await asyncio.wait(self._running, timeout=max(0.0, deadline - time.monotonic()))

    # -- admission --------------------------------------------------------------------------

    @property
    def full(self) -> bool:
        limits = self.limits
        return (
            len(self._pending) >= limits.max_queue_items
            or self._queued_tokens >= limits.max_queue_tokens
        )

    def check_room(self) -> None:
        """Refuse early, before a request is parsed and tokenised, when the queue is full:
        under overload, refusals must cost as little as possible."""
        if self.full:
            raise self._full_error()

    def refusal(self) -> Overloaded | None:
        """What ``check_room`` would raise, returned instead, or None when there is room.

        Under overload the HTTP layer asks this once per request (App.early_refusal), so
        the error is built once per Retry-After value and shared: never raise it, as a
        raised error keeps a traceback and would be one object in many requests."""
        if not self.full:
            return None
        retry_after = self._retry_after()
        limits, shared = self._refusal
        if shared is None or shared.retry_after != retry_after or limits is not self.limits:
            shared = self._full_error()
            self._refusal = (self.limits, shared)
        return shared

    def _full_error(self) -> Overloaded:
        # The limits, not the current counts: the message stays the same from one refusal
        # to the next (``refusal`` shares it); the queue depth gauge has the counts.
        items, tokens = self.limits.max_queue_items, self.limits.max_queue_tokens
        return Overloaded(
            f"the {self.name} queue is full: at most {items} text{'s' * (items != 1)} and "
            f"{tokens} token{'s' * (tokens != 1)} wait at once",
            retry_after=self._retry_after(),
        )

    def _admit(self, items: Sequence[Item], deadline: float | None) -> None:
        if self._closing:
            raise Unavailable("the service is shutting down")
        if deadline is not None and deadline <= time.monotonic():
            raise DeadlineExceeded("the deadline passed before the request was queued")
        limits = self.limits
        tokens = 0
        for item in items:
            if item.tokens == 0:
                raise InvalidInput("an item has no tokens")
            tokens += item.tokens
        if len(items) > limits.max_queue_items or tokens > limits.max_queue_tokens:
            # It would never fit, however long the client waited: not a 429 to retry.
            raise InvalidInput(
                f"the request has {len(items)} texts and {tokens} tokens; the {self.name} "
                f"queue holds at most {limits.max_queue_items} texts and "
                f"{limits.max_queue_tokens} tokens"
            )
        if (
            len(self._pending) + len(items) > limits.max_queue_items
            or self._queued_tokens + tokens > limits.max_queue_tokens
        ):
            raise self._full_error()

    def _retry_after(self) -> float:
        if self._rate <= 0:
            return 1.0
        return min(60.0, max(1.0, math.ceil(len(self._pending) / self._rate)))

    def _is_full(self) -> bool:
        return (
            len(self._pending) >= self.limits.max_batch_size
            or self._queued_tokens >= self.limits.max_batch_tokens
        )

    def _expire(self, seq: int) -> None:
        entry = self._pending.get(seq)
        queued = entry is not None
        if entry is None:
            entry = self._inflight.get(seq)
        if entry is not None and not entry.future.done():
            entry.timer = None
            where = "while the request was queued" if queued else LATE
            entry.future.set_exception(DeadlineExceeded(f"the deadline passed {where}"))

    def _on_done(self, seq: int, _future: asyncio.Future[FloatArray]) -> None:
        self._discard(seq)

    def _discard(self, seq: int) -> None:
        """Forget an entry whose future is done, queued or in a batch."""
        entry = self._pending.pop(seq, None)
        if entry is not None:
            self._queued_tokens -= entry.item.tokens
        else:
            entry = self._inflight.pop(seq, None)
        if entry is not None and entry.timer is not None:
            entry.timer.cancel()

    def _dequeue(self, entry: _Entry) -> None:
        """Move an entry from the queue into a batch; its deadline timer keeps running."""
        del self._pending[entry.seq]
        self._queued_tokens -= entry.item.tokens
        if entry.timer is not None:
            self._inflight[entry.seq] = entry

    # -- the loop ---------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            if not self._pending:
                if self._closing:
                    if self._running:
                        await asyncio.wait(set(self._running))
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            await self._slots.acquire()
            try:
                await self._wait_to_fill()
                batch = self._take()
            except BaseException:
                self._slots.release()
                raise
            if not batch:
                self._slots.release()
                continue
            task = asyncio.get_running_loop().create_task(self._execute(batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _wait_to_fill(self) -> None:
        if not self._pending or self._is_full() or self._closing:
            return
        if len(self._running) < self.limits.concurrency - 1:
            return  # a lane is idle: waiting for company would leave it idle
        oldest = next(iter(self._pending.values()))
        if not oldest.dense:
            # It came after a quiet spell: another text is unlikely within max_delay, so
            # waiting would only add latency (at 100 texts/s: 2 ms of a 6 ms p50).
            return
        remaining = oldest.enqueued + self.limits.max_delay - time.monotonic()
        if remaining <= 0:
            return
        self._full.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(remaining):
                await self._full.wait()

    def _take(self) -> list[_Entry]:
        """Pop the oldest entry and its nearest neighbours by length, within the limits."""
        limits = self.limits
        window: list[_Entry] = []
        now = time.monotonic()
        for entry in list(self._pending.values()):
            if entry.deadline is not None and entry.deadline <= now:
                self._expire(entry.seq)  # due, though its timer has not fired yet
            if entry.future.done():  # cancelled or expired; its callback has not run yet
                self._discard(entry.seq)
                continue
            window.append(entry)
            if len(window) >= WINDOW:
                break
        if not window:
            return []
        if limits.pack_width > 0:
            chosen = fill_rows([e.item.tokens for e in window], limits)
            batch = [window[i] for i in chosen]
        else:
            anchor = window[0]
            ordered = sorted(window, key=lambda e: e.item.tokens)
            lengths = [e.item.tokens for e in ordered]
            lo, hi = grow(lengths, ordered.index(anchor), limits)
            batch = ordered[lo : hi + 1]
        for entry in batch:
            self._dequeue(entry)
        return batch

    async def _execute(self, batch: list[_Entry]) -> None:
        started = time.monotonic()
        failed = False
        ran = batch  # the entries the engine ran: not those it answered NotRun
        try:
            outputs = await self._call(batch)
            if len(outputs) != len(batch):
                raise EngineError(
                    f"the engine returned {len(outputs)} outputs for {len(batch)} inputs"
                )
            ran = [e for e, out in zip(batch, outputs, strict=True) if not isinstance(out, NotRun)]
            for entry, out in zip(batch, outputs, strict=True):
                if entry.future.done():
                    continue
                if isinstance(out, BaseException):
                    entry.future.set_exception(out)
                else:
                    entry.future.set_result(out)
        except Exception as exc:
            failed = True
            _fail(batch, exc)
        finally:
            self._slots.release()
            self._wakeup.set()
            ended = time.monotonic()
            if ran:
                self._observe(ran, started, ended, failed)

    async def _call(self, batch: list[_Entry]) -> Sequence[FloatArray | BaseException]:
        if not tracing.enabled():
            return await self._infer(_Batch(batch))
        with tracing.batch_span(
            self.name,
            self.engine,
            # The oldest member's trace holds the batch (a padded batch is in length order).
            [e.record.span for e in sorted(batch, key=_seq) if e.record and e.record.span],
            len(batch),
            self._padded([e.item.tokens for e in batch]),
        ):
            return await self._infer(_Batch(batch))

    def _padded(self, lengths: list[int]) -> int:
        """The tokens the engine computes for a batch: its packed rows, or its padding."""
        if self.limits.pack_width > 0:
            return packed_tokens(lengths, self.limits.pack_width)
        return max(lengths) * len(lengths)

    def _observe(self, batch: list[_Entry], started: float, ended: float, failed: bool) -> None:
        duration = max(ended - started, 1e-6)
        rate = len(batch) / duration * self.limits.concurrency
        self._rate = rate if self._rate == 0 else 0.8 * self._rate + 0.2 * rate
        for entry in batch:
            if entry.record is not None:
                entry.record.batched(started - entry.enqueued, duration)
        if self._on_batch is None:
            return
        lengths = [e.item.tokens for e in batch]
        padded = self._padded(lengths)
        self._on_batch(
            BatchReport(
                size=len(batch),
                tokens=sum(lengths),
                padded_tokens=padded,
                queue_waits=[started - e.enqueued for e in batch],
                duration=duration,
                failed=failed,
            )
        )
