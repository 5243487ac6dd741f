"""The queue worker: reads jobs with XREADGROUP BLOCK, runs them through ``Service.results``
(the same batcher and engine as HTTP), then writes each result and XACKs in one MULTI.

Delivery is at least once; the result is written once (SET NX), so a job run twice (after a
crash or a reclaim) still has exactly one stored result. See docs/queue.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import time
import uuid
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

import orjson
import redis.asyncio as redis
from redis.exceptions import RedisError, ResponseError

from inferline.api.validation import check_texts
from inferline.config import Settings
from inferline.errors import REFUSALS, DeadlineExceeded, InvalidInput, NotFound, Overloaded
from inferline.queue.keys import ID_RULE, JOB_ID, MODELS, QueueKeys, keys_of
from inferline.queue.producer import DONE, FAILED, encode_outcome
from inferline.telemetry import context, tracing
from inferline.telemetry.context import RequestRecord
from inferline.telemetry.metrics import Metrics

log = logging.getLogger(__name__)

BACKOFF_MIN_S = 0.1
BACKOFF_MAX_S = 5.0
TRANSIENT_RETRIES = 5
NOT_READY_WAIT_S = 0.5  # a full or slow batcher: retried in place before the job is left


class Runner(Protocol):
    """What the worker needs of a Service: ``results``, and which models can run now."""

    def not_ready_reason(self, model: str | None = None) -> str: ...

    def model_ready(self, name: str) -> bool: ...

    def results(
        self, name: str, texts: Sequence[str], deadline: float | None = None
    ) -> Awaitable[list[dict[str, Any]]]: ...


@dataclass(slots=True)
class Job:
    entry: str  # the stream entry id
    id: str
    model: str
    inputs: list[str]
    deliveries: int = 1
    outcome: bytes | None = None  # set once the job is finished, one way or the other
    error: str | None = None  # the last transient failure, whole (log, dead letter)
    shown: str | None = None  # the same as its result gives it: an engine's by an id alone
    dead: bool = False
    trace: dict[str, str] = field(default_factory=dict)  # the submitter's trace context
    status: str = ""

    def finish(self, status: str, payload: Any) -> None:
        self.status = status
        self.outcome = encode_outcome(status, self.id, self.model, payload)

    @classmethod
    def parse(cls, entry: str, fields: dict[str, str], deliveries: int = 1) -> Job:
        job_id = fields.get("id", entry)
        model = fields.get("model", "")
        utf8 = _utf8(job_id) and _utf8(model)
        named = utf8 and JOB_ID.fullmatch(job_id) is not None  # GET /v1/jobs/{id} can read it
        if not named:  # the entry id names the job (a foreign producer's XADD returned it)
            job_id, model = entry, model if utf8 else ""
        try:
            inputs = orjson.loads(fields.get("inputs", "[]"))  # rejects escaped bytes too
        except orjson.JSONDecodeError:
            inputs = None
        job = cls(entry, job_id, model, inputs if _texts(inputs) else [], deliveries)
        job.trace = {k: fields[k] for k in tracing.TRACE_FIELDS if k in fields and _utf8(fields[k])}
        if not utf8:
            job.finish(FAILED, "the job's 'id' or 'model' is not UTF-8")
        elif not named:
            job.finish(FAILED, f"the job's 'id' is not {ID_RULE}")
        elif not _texts(inputs):
            job.finish(FAILED, "'inputs' is not a list of texts")
        return job


def _utf8(text: str) -> bool:
    """False for a field whose bytes were not UTF-8 (decoded with surrogateescape)."""
    if text.isascii():
        return True
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _texts(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(t, str) for t in value)


def default_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass
class Worker:
    runner: Runner
    client: redis.Redis
    settings: Settings
    name: str = field(default_factory=default_name)
    metrics: Metrics = field(default_factory=lambda: Metrics(gpu=False))
    keys: QueueKeys = field(init=False)
    processed: int = 0
    reading: bool = False  # the group exists and reads succeed (readiness)
    redis_error: str | None = None  # the last Redis failure, until a call succeeds again
    _stopping: asyncio.Event = field(default_factory=asyncio.Event)
    _last_reclaim: float = 0.0
    _cursor: str = "0-0"

    def __post_init__(self) -> None:
        self.keys = keys_of(self.settings)

    def stop(self) -> None:
        """Stop reading; the jobs in hand finish (``run`` returns when they are written)."""
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def not_ready_reason(self) -> str | None:
        """Why the worker is not taking jobs now, or None (read from the probe's thread)."""
        if self.stopping:
            return "draining: no new jobs are read"
        if self.redis_error is not None:
            return f"Redis cannot be reached ({self.redis_error}); retrying"
        if not self._can_run():
            return f"{self.runner.not_ready_reason()}; every job waits in the stream"
        if not self.reading:
            return "not reading the stream yet"
        return None

    @property
    def _read_count(self) -> int:
        return min(self.settings.queue_read_count, self.settings.queue_prefetch)

    async def run(self) -> None:
        """Read and run jobs until ``stop``; survive Redis going away, with backoff.

        Several reads are processed at once, up to ``queue_prefetch`` jobs: while one read's
        last batch runs and its results are written, the others keep the lanes fed, and the
        batcher has enough texts to group by length (docs/queue.md, "Prefetch").
        """
        failures = 0
        in_flight: set[asyncio.Task[None]] = set()
        reads = max(1, self.settings.queue_prefetch // self._read_count)
        try:
            while not self.stopping:
                try:
                    await self.ensure_group()
                    self.reading, self.redis_error = True, None
                    while not self.stopping:
                        if len(in_flight) >= reads:
                            done, in_flight = await asyncio.wait(
                                in_flight, return_when=asyncio.FIRST_COMPLETED
                            )
                            for task in done:
                                task.result()  # a Redis error goes to the backoff below
                            continue
                        if not self._can_run():
                            # Loading, or every model's upstream is down: leave the jobs
                            # in the stream (other workers, or this one later) rather than
                            # burn their deliveries on certain failures.
                            await self._sleep(NOT_READY_WAIT_S)
                            continue
                        jobs = await self.fetch()
                        if jobs:
                            in_flight.add(asyncio.create_task(self.process(jobs)))
                        failures, self.redis_error = 0, None
                except (RedisError, OSError) as exc:
                    self.redis_error = str(exc) or type(exc).__name__
                    failures += 1
                    delay = min(BACKOFF_MAX_S, BACKOFF_MIN_S * 2**failures)
                    delay *= random.uniform(0.5, 1)
                    log.warning("redis error (%s); retrying in %.2f s", exc, delay)
                    await self._sleep(delay)
        except asyncio.CancelledError:
            for task in in_flight:  # past the grace period: left pending, to be reclaimed
                task.cancel()
            raise
        finally:
            if in_flight:  # the jobs in hand are written before run returns
                await asyncio.gather(*in_flight, return_exceptions=True)

    def _can_run(self) -> bool:
        """Whether some model can run jobs now (the jobs of one whose remote upstream is
        down are held: ``_hold``)."""
        return any(self.runner.model_ready(model) for model in MODELS)

    def _held(self, job: Job) -> bool:
        return job.model in MODELS and not self.runner.model_ready(job.model)

    async def ensure_group(self) -> None:
        try:
            await self.client.xgroup_create(self.keys.stream, self.keys.group, "0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def step(self) -> int:
        """One round without pipelining: fetch, run and write."""
        jobs = await self.fetch()
        if jobs:
            await self.process(jobs)
        return len(jobs)

    async def fetch(self) -> list[Job]:
        """Reclaim stale jobs when due, else read new ones (blocking)."""
        jobs = await self.reclaim() if self._reclaim_due() else []
        if not jobs:
            reply = await self.client.xreadgroup(
                self.keys.group,
                self.name,
                {self.keys.stream: ">"},
                count=self._read_count,
                block=self.settings.queue_block_ms,
            )
            streams = cast(list[tuple[str, list[tuple[str, dict[str, str]]]]], reply)
            jobs = [Job.parse(entry, fields) for _, entries in streams for entry, fields in entries]
        return jobs

    def _reclaim_due(self) -> bool:
        interval = min(self.settings.queue_reclaim_idle_s / 2, 5.0)
        now = time.monotonic()
        if now - self._last_reclaim < interval:
            return False
        self._last_reclaim = now
        return True

    async def reclaim(self) -> list[Job]:
        """Take over jobs idle past ``queue_reclaim_idle_s`` (their worker died or stalled),
        dead-letter those delivered too often, and trim acknowledged history."""
        idle_ms = int(self.settings.queue_reclaim_idle_s * 1000)
        # The cursor goes round the PEL across rounds, past entries that are not idle yet.
        self._cursor, claimed, deleted = await self.client.xautoclaim(
            self.keys.stream,
            self.keys.group,
            self.name,
            idle_ms,
            self._cursor,
            count=self._read_count,
        )
        if deleted:  # entries trimmed while pending cannot happen here; ack them if they do
            await self.client.xack(self.keys.stream, self.keys.group, *deleted)
        await self.trim()
        if not claimed:
            return []
        async with self.client.pipeline(transaction=False) as pipe:
            for entry, _ in claimed:
                pipe.xpending_range(self.keys.stream, self.keys.group, entry, entry, 1)
            ranges = await pipe.execute()
        jobs = []
        for (entry, fields), found in zip(claimed, ranges, strict=True):
            deliveries = int(found[0]["times_delivered"]) if found else 1
            jobs.append(Job.parse(entry, fields, deliveries))
        log.info("reclaimed %d job(s)", len(jobs))
        for job in jobs:
            if job.outcome is None and job.deliveries > self.settings.queue_max_deliveries:
                job.dead = True
                # No worker finished it, so no error was seen: say that in the dead letter.
                job.error = f"gave up after {job.deliveries - 1} deliveries"
                job.finish(FAILED, job.error)
        return jobs

    async def trim(self) -> None:
        """Drop acknowledged history only: entries older than both the group's last delivered
        entry and its oldest pending one. The group is read before the pending list, so an
        entry delivered in between is newer than the bound."""
        groups = await self.client.xinfo_groups(self.keys.stream)
        group = next((g for g in groups if g["name"] == self.keys.group), None)
        if group is None:
            return
        last = group["last-delivered-id"]
        stream = self.keys.stream
        if group.get("lag") is not None:  # None when Redis cannot tell (after deletions)
            self.metrics.stream_lag.labels(stream).set(group["lag"])
        self.metrics.stream_pending.labels(stream).set(group["pending"])
        pending = await self.client.xpending(self.keys.stream, self.keys.group)
        bound = last if not pending["pending"] else min(last, pending["min"], key=_entry_key)
        await self.client.xtrim(self.keys.stream, minid=bound, approximate=False)

    async def process(self, jobs: list[Job]) -> None:
        """Run the jobs together (the batcher batches them), keep their leases alive, write.

        One ``process`` span covers them (a child of the first job's submitter, linked to
        every job's), and one record gathers their queue wait and engine time."""
        record = RequestRecord("queue", model=jobs[0].model if jobs else "none")
        token = context.enter(record)
        try:
            with tracing.consumer_span(
                f"process {self.keys.stream}", [job.trace for job in jobs], self._attrs(jobs)
            ) as span:
                record.span = span
                await self._process(jobs)
        finally:
            context.leave(token)

    def _attrs(self, jobs: list[Job]) -> dict[str, Any]:
        attributes: dict[str, Any] = {
            "messaging.system": "redis",
            "messaging.destination.name": self.keys.stream,
            "messaging.consumer.group.name": self.keys.group,
            "messaging.operation.type": "process",
            "messaging.operation.name": "process",
            "messaging.batch.message_count": len(jobs),
        }
        if len(jobs) == 1:
            attributes["messaging.message.id"] = jobs[0].entry
        return attributes

    async def _process(self, jobs: list[Job]) -> None:
        for job in jobs:
            if job.outcome is None:
                self._check(job)
        lease = asyncio.create_task(self._keep_leases(jobs))
        try:
            held: list[Job] = []
            now: list[Job] = []
            for job in jobs:  # decided once: readiness may change at any moment
                (held if job.outcome is None and self._held(job) else now).append(job)
            await self._run_all(now)
            await self._write([job for job in now if job.outcome is not None])
            if held and await self._hold(held):
                await self._run_all(held)
                await self._write([job for job in held if job.outcome is not None])
        finally:
            lease.cancel()

    async def _run_all(self, jobs: list[Job]) -> None:
        todo = [job for job in jobs if job.outcome is None]
        await asyncio.gather(*(self._run(job) for job in todo))
        # An engine failure fails a whole batch: run the failed ones alone, so that one
        # poison job does not take its batch mates with it.
        for job in todo:
            if job.outcome is None and not self.stopping:
                await self._run(job)
        for job in todo:
            if job.outcome is None and job.deliveries >= self.settings.queue_max_deliveries:
                job.dead = True
                job.finish(FAILED, f"failed {job.deliveries} times; last error: {job.shown}")

    async def _hold(self, jobs: list[Job]) -> bool:
        """Keep the jobs of models whose remote upstream is down (their leases renewed,
        which spends no delivery) until it is back; the others' results are written
        meanwhile. False when the worker stops first: they stay pending, for a reclaim."""
        while any(self._held(job) for job in jobs):
            if self.stopping:
                return False
            await self._sleep(NOT_READY_WAIT_S)
        return True

    def _check(self, job: Job) -> None:
        """The checks and limits of POST /v1/jobs, for jobs that came another way (the
        Producer library, `inferline submit`, a foreign XADD): a job HTTP would refuse
        fails at once, instead of giving a result for an empty text or being retried as
        an overload it can never get past."""
        try:
            check_texts(job.inputs, self.settings, "inputs")
        except InvalidInput as exc:
            job.finish(FAILED, str(exc))

    async def _run(self, job: Job) -> None:
        for attempt in range(TRANSIENT_RETRIES):
            deadline = time.monotonic() + self.settings.queue_job_timeout_s
            try:
                results = await self.runner.results(job.model, job.inputs, deadline)
            except (InvalidInput, NotFound) as exc:  # the job itself is wrong: no retry
                job.finish(FAILED, str(exc))
                return
            except (Overloaded, DeadlineExceeded) as exc:
                job.error = job.shown = str(exc)
                await self._sleep(BACKOFF_MIN_S * 2**attempt)
                continue
            except Exception as exc:  # the engine (or anything else): retried, then DLQ
                job.error = f"{type(exc).__name__}: {exc}"
                cause = exc.__cause__  # a remote engine's: what its upstream said
                if cause is not None and str(cause):
                    job.error += f" ({cause})"
                # As HTTP's 500: the detail (a path, an upstream's words) stays in the log
                # and the dead letter; GET /v1/jobs/{id} gives an id to find it by.
                refused = isinstance(exc, REFUSALS)
                job.shown = str(exc) if refused else f"internal error (id {uuid.uuid4().hex})"
                log.warning(
                    "job %s failed (delivery %d): %s [%s]",
                    job.id,
                    job.deliveries,
                    job.error,
                    job.shown,
                )
                return
            job.finish(DONE, results)
            return

    async def _keep_leases(self, jobs: list[Job]) -> None:
        """Reset the idle time of the jobs in hand, from the event loop (the model runs in
        threads), so that a slow batch is not reclaimed while it is still running."""
        period = self.settings.queue_reclaim_idle_s / 3
        entries: list[str | bytes | int | memoryview[int]] = [job.entry for job in jobs]
        while True:
            await asyncio.sleep(period)
            try:
                await self.client.xclaim(
                    self.keys.stream, self.keys.group, self.name, 0, entries, justid=True
                )
            except RedisError as exc:
                log.warning("could not renew leases: %s", exc)

    async def _write(self, jobs: list[Job]) -> None:
        """In one MULTI: per job, the result (SET NX: the first one wins), the TTL of the
        idempotency key and a dead-letter entry if it gave up; then one XACK of them all.
        Retried with backoff while Redis is away; the results are in memory."""
        if not jobs:
            return
        ttl = self.settings.queue_result_ttl_s
        failures = 0
        while True:
            try:
                async with self.client.pipeline(transaction=True) as pipe:
                    for job in jobs:
                        assert job.outcome is not None
                        pipe.set(self.keys.result(job.id), job.outcome, nx=True, ex=ttl)
                        # NX: a late second run must not outlive the first one's result,
                        # or the job would read "pending" once the result expired.
                        pipe.expire(self.keys.job(job.id), ttl, nx=True)
                        if job.dead:
                            pipe.xadd(self.keys.dead, _dead_fields(job))
                    pipe.xack(self.keys.stream, self.keys.group, *(job.entry for job in jobs))
                    await pipe.execute()
                self.redis_error = None
                self.processed += len(jobs)
                self._count(jobs)
                return
            except (RedisError, OSError) as exc:
                self.redis_error = str(exc) or type(exc).__name__  # readiness, meanwhile
                failures += 1
                if failures > 8:
                    raise  # leave them pending: another delivery will write them
                delay = min(BACKOFF_MAX_S, BACKOFF_MIN_S * 2**failures)
                log.warning("writing results failed (%s); retrying in %.2f s", exc, delay)
                await asyncio.sleep(delay)

    def _count(self, jobs: list[Job]) -> None:
        """Each job's outcome, and a request of protocol ``queue``: its time runs from the
        stream entry's creation (Redis's clock, in its id) to the result's write."""
        now_ms = time.time() * 1000
        for job in jobs:
            outcome = "dead_lettered" if job.dead else job.status
            model = job.model if job.model in MODELS else "none"  # bounded, as requests_total
            self.metrics.jobs.labels(model, outcome).inc()
            record = RequestRecord("queue", model, outcome)
            waited_ms = max(0.0, now_ms - _entry_key(job.entry)[0])  # clocks may disagree
            self.metrics.record_request(record, waited_ms / 1000)

    async def _sleep(self, seconds: float) -> None:
        """Sleep, but wake at once on ``stop``."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)


def _dead_fields(job: Job) -> dict[str | bytes | bytearray | memoryview[int] | int | float, Any]:
    return {
        "id": job.id,
        "model": job.model,
        "inputs": orjson.dumps(job.inputs).decode(),
        "error": job.error or "",
        "deliveries": job.deliveries,
        "entry": job.entry,
    }


def _entry_key(entry: str) -> tuple[int, int]:
    ms, _, seq = entry.partition("-")
    return int(ms), int(seq or 0)
