"""The Redis names of the queue, from one place (the Kubernetes manifests reuse them), and a
client built from ``INFERLINE_REDIS_URL``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from inferline.config import Settings
from inferline.errors import InvalidInput, Unavailable

if TYPE_CHECKING:
    import redis.asyncio as redis

JOB_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")  # fullmatch: "$" also matches before a "\n"
ID_RULE = "1 to 128 characters of letters, digits, '.', '_', ':' or '-'"
MODELS = ("sentiment", "embedding")


@dataclass(frozen=True, slots=True)
class QueueKeys:
    prefix: str

    @property
    def stream(self) -> str:
        """The job stream: one entry per job, fields ``id``, ``model``, ``inputs``."""
        return f"{self.prefix}:jobs"

    @property
    def group(self) -> str:
        """The consumer group every worker reads in."""
        return f"{self.prefix}:workers"

    @property
    def dead(self) -> str:
        """The dead-letter stream: jobs that failed ``queue_max_deliveries`` times."""
        return f"{self.prefix}:dead"

    def job(self, job_id: str) -> str:
        """Created at submission (the idempotency key); its existence means "known"."""
        return f"{self.prefix}:job:{job_id}"

    def result(self, job_id: str) -> str:
        """The stored outcome, written once (SET NX): ``done`` with results or ``failed``."""
        return f"{self.prefix}:result:{job_id}"


def keys_of(settings: Settings) -> QueueKeys:
    return QueueKeys(settings.queue_prefix)


def check_job_id(job_id: object) -> str:
    if not isinstance(job_id, str) or not JOB_ID.fullmatch(job_id):
        raise InvalidInput(f"'id' must be {ID_RULE}")
    return job_id


def connect(settings: Settings, *, block_ms: int = 0, retry: bool = False) -> redis.Redis:
    """A client for ``INFERLINE_REDIS_URL`` (passwords and ``rediss://`` work). Connections
    are made lazily, and again after a failure; ``block_ms`` widens the read timeout for
    blocking reads. ``retry``: a command that fails on a connection Redis closed (a
    restart, CLIENT KILL, an idle timeout) is sent once more on a fresh one. Only for
    commands that are safe to apply twice (a ConnectionError may come after Redis ran
    one): the producer's, whose SUBMIT is keyed by the job id; not the worker's writes."""
    if not settings.redis_url:
        raise Unavailable(
            "the job queue is not configured: set INFERLINE_REDIS_URL to a Redis server"
        )
    import redis.asyncio as redis  # only the queue needs it

    return redis.Redis.from_url(
        settings.redis_url,
        decode_responses=True,
        # A foreign producer may write bytes that are not UTF-8. Strict decoding raised in the
        # middle of XREADGROUP, and the worker died on each delivery; escaped, the bytes
        # reach Job.parse, which fails that job alone, and written back they are unchanged.
        encoding_errors="surrogateescape",
        socket_connect_timeout=5,
        socket_timeout=10 + block_ms / 1000,
        health_check_interval=30,
        **(_retry_once() if retry else {}),
    )


def _retry_once() -> dict[str, Any]:
    """redis-py retries no error unless told to, and its default Retry would also retry
    timeouts (a command that may have run): connection errors only, once, at once."""
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff
    from redis.exceptions import ConnectionError as RedisConnectionError

    errors = (RedisConnectionError,)
    return {"retry": Retry(NoBackoff(), 1, supported_errors=errors), "retry_on_error": errors}
