"""Enqueue jobs and read their outcome: the library behind ``POST /v1/jobs``,
``GET /v1/jobs/{id}`` and ``inferline submit``."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence
from typing import Any

import orjson
import redis.asyncio as redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from inferline.config import Settings
from inferline.errors import InvalidInput, Overloaded, Unavailable
from inferline.queue.keys import MODELS, QueueKeys, check_job_id, connect, keys_of
from inferline.telemetry import tracing

log = logging.getLogger(__name__)
_logged_at = -1.0  # when unavailable() last logged (time.monotonic())

# Atomic: the idempotency key and the stream entry appear together or not at all, and a
# stream over its bound refuses the job before anything is written. A stream that does not
# exist yet is created with the workers' group: KEDA reads the group's lag to wake workers
# from zero, and with no group (a Redis that lost its data while no worker ran) it would
# read nothing, and the jobs would wait for a worker that is never started.
# The bound counts the jobs not yet done: the group's lag (waiting) and pending entries
# (in hand), not XLEN, which also counts done entries until the workers next trim (every
# reclaim round, never past the oldest pending entry). Without a lag (Redis before 7.0, or
# one it cannot tell) XLEN stands in. XLEN is still capped, at twice the bound: a job held
# pending for long (its upstream down) stops the trim, and done entries pile up behind it.
# The job key holds the model and a hash of the inputs, so an id reused for other work is
# refused (CONFLICT) rather than answered with the first job's result; a key holding the
# model alone (written before the hash was) matches any inputs.
# KEYS: job key, stream. ARGV: max stream length, id, model, inputs (JSON), group, then
# the trace context fields (name, value, ...) of the submitter, when tracing is on.
SUBMIT = """
local tag = ARGV[3] .. ' ' .. redis.sha1hex(ARGV[4])
local known = redis.call('GET', KEYS[1])
if known then
  if known == tag or known == ARGV[3] then return 0 end
  return -2
end
if redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('XGROUP', 'CREATE', KEYS[2], ARGV[5], '0', 'MKSTREAM')
else
  local held = nil
  for _, group in ipairs(redis.call('XINFO', 'GROUPS', KEYS[2])) do
    local info = {}
    for i = 1, #group, 2 do info[group[i]] = group[i + 1] end
    if info['name'] == ARGV[5] and info['lag'] then held = info['lag'] + info['pending'] end
  end
  local length = redis.call('XLEN', KEYS[2])
  if not held then held = length end
  if held >= tonumber(ARGV[1]) or length >= 2 * tonumber(ARGV[1]) then return -1 end
end
redis.call('SET', KEYS[1], tag)
local fields = {'id', ARGV[2], 'model', ARGV[3], 'inputs', ARGV[4]}
for i = 6, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('XADD', KEYS[2], '*', unpack(fields))
return 1
"""

NEW, KNOWN, REFUSED, CONFLICT = 1, 0, -1, -2  # SUBMIT's replies
PENDING = "pending"
DONE = "done"
FAILED = "failed"


def unavailable(exc: RedisError) -> Unavailable:
    """The 503 for a failed Redis call. Its detail names Redis's address: logged only, at
    most once a second, since during an outage every request fails with it."""
    global _logged_at  # noqa: PLW0603 - one line a second for the whole process
    now = time.monotonic()
    if now - _logged_at >= 1.0:
        _logged_at = now
        log.warning("the job queue failed: %s", exc)
    if isinstance(exc, RedisConnectionError | RedisTimeoutError):
        return Unavailable("the job queue is unreachable (the log says why)")
    return Unavailable("the job queue refused the request (the log says why)")


def encode_outcome(status: str, job_id: str, model: str, payload: Any) -> bytes:
    """The stored result: ``{"id", "status": "done", "model", "results"}`` or
    ``{"id", "status": "failed", "model", "error"}``."""
    field = "results" if status == DONE else "error"
    body = {"id": job_id, "status": status, "model": model, field: payload}
    return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)


class Producer:
    def __init__(self, client: redis.Redis, keys: QueueKeys, max_len: int) -> None:
        self.client = client
        self.keys = keys
        self.max_len = max_len
        self._submit = client.register_script(SUBMIT)

    @classmethod
    def from_settings(cls, settings: Settings) -> Producer:
        # SUBMIT is keyed by the job id and the reads are reads: safe to send twice.
        return cls(connect(settings, retry=True), keys_of(settings), settings.queue_max_len)

    async def close(self) -> None:
        await self.client.aclose()

    async def submit(
        self, model: str, inputs: Sequence[str], job_id: str | None = None
    ) -> tuple[str, bool]:
        """Enqueue a job; returns its id and whether it is new. A known ``job_id`` is not
        enqueued again (an idempotency key). Raises Overloaded past ``queue_max_len``."""
        (outcome,) = await self.submit_many([(model, inputs, job_id)])
        return outcome

    async def submit_many(
        self, jobs: Sequence[tuple[str, Sequence[str], str | None]]
    ) -> list[tuple[str, bool]]:
        """Enqueue several jobs in one round trip; each is admitted or refused on its own.
        Raises Overloaded if the stream refused any (the others are in)."""
        outcomes = await self.submit_each(jobs)
        for job_id, reply in outcomes:
            if reply == CONFLICT:
                raise InvalidInput(
                    f"the job id {job_id!r} was used for other inputs or another model; "
                    "an id names one job",
                    status=409,
                )
        if any(reply == REFUSED for _, reply in outcomes):
            raise Overloaded(
                f"the job queue holds {self.max_len} jobs or more; retry later",
                retry_after=5,
                reason="stream_full",
            )
        return [(job_id, reply == NEW) for job_id, reply in outcomes]

    async def submit_each(
        self, jobs: Sequence[tuple[str, Sequence[str], str | None]]
    ) -> list[tuple[str, int]]:
        """As :meth:`submit_many`, with each job's reply: NEW, KNOWN, REFUSED (the stream
        is full; nothing of it was written) or CONFLICT (the id names other work)."""
        ids: list[str] = []
        carrier: dict[str, str] = {}
        tracing.inject(carrier)  # the worker's span continues the submitter's trace
        trace_fields = [part for pair in carrier.items() for part in pair]
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                for model, inputs, given in jobs:
                    if model not in MODELS:
                        raise InvalidInput(f"unknown model {model!r}; known: {', '.join(MODELS)}")
                    job_id = check_job_id(given) if given is not None else uuid.uuid4().hex
                    ids.append(job_id)
                    await self._submit(
                        keys=[self.keys.job(job_id), self.keys.stream],
                        args=[
                            self.max_len,
                            job_id,
                            model,
                            orjson.dumps(list(inputs)),
                            self.keys.group,
                            *trace_fields,
                        ],
                        client=pipe,
                    )
                replies = await pipe.execute()
        except RedisError as exc:
            raise unavailable(exc) from exc
        return [(job_id, int(reply)) for job_id, reply in zip(ids, replies, strict=True)]

    async def status(self, job_id: str) -> dict[str, Any] | None:
        """The job's outcome, ``{"id", "status": "pending"}``, or None when it is unknown."""
        (outcome,) = await self.statuses([job_id])
        return outcome

    async def statuses(self, job_ids: Sequence[str]) -> list[dict[str, Any] | None]:
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                for job_id in job_ids:
                    pipe.get(self.keys.result(job_id))
                    pipe.exists(self.keys.job(job_id))
                replies = await pipe.execute()
        except RedisError as exc:
            raise unavailable(exc) from exc
        outcomes: list[dict[str, Any] | None] = []
        for i, job_id in enumerate(job_ids):
            result, known = replies[2 * i], replies[2 * i + 1]
            if result is not None:
                outcomes.append(orjson.loads(result))
            elif known:
                outcomes.append({"id": job_id, "status": PENDING})
            else:
                outcomes.append(None)
        return outcomes
