"""Crash tests: workers SIGKILLed, SIGSTOPped and SIGTERMed under load, and redis-server
SIGKILLed with AOF. Every acknowledged job ends with exactly one stored result, and the
pending-entries list ends empty."""

from __future__ import annotations

import asyncio
import random
import signal
import time
import uuid
from pathlib import Path

import pytest

from inferline.config import Settings
from inferline.queue.keys import connect, keys_of
from inferline.queue.producer import Producer
from tests.conftest import RedisServer, WorkerFactory, free_port

pytestmark = pytest.mark.integration

JOBS = 10_000
WORKERS = 3
KILLS = 5
# Long enough that a batch takes a few milliseconds, so the signals land mid-run.
FILLER = " and the battery lasts all day" * 12


def env_for(url: str, **extra: str) -> dict[str, str]:
    return {
        "INFERLINE_REDIS_URL": url,
        "INFERLINE_QUEUE_PREFIX": f"crash-{uuid.uuid4().hex[:8]}",
        "INFERLINE_QUEUE_BLOCK_MS": "200",
        "INFERLINE_QUEUE_RECLAIM_IDLE_S": "1",
        "INFERLINE_QUEUE_READ_COUNT": "16",
        # Two reads in hand. Each SIGKILL counts as a delivery of every job its worker held,
        # and a job held through QUEUE_MAX_DELIVERIES (3) kills is dead-lettered, as
        # docs/queue.md says: with the default 512 in hand, one run in four of this test
        # dead-lettered 16 of the 10,000. Here no job may fail, and none be lost or doubled.
        "INFERLINE_QUEUE_PREFETCH": "32",
        "INFERLINE_SHUTDOWN_GRACE_S": "5",
        **extra,
    }


def settings_of(env: dict[str, str]) -> Settings:
    return Settings(
        redis_url=env["INFERLINE_REDIS_URL"], queue_prefix=env["INFERLINE_QUEUE_PREFIX"]
    )


def enqueue(env: dict[str, str], count: int = JOBS) -> list[str]:
    async def main() -> list[str]:
        producer = Producer.from_settings(settings_of(env))
        try:
            jobs = [
                ("sentiment", [f"review {i}: it works well{FILLER}"], f"job-{i}")
                for i in range(count)
            ]
            return [job_id for job_id, _ in await producer.submit_many(jobs)]
        finally:
            await producer.close()

    return asyncio.run(main())


def done_count(env: dict[str, str], ids: list[str]) -> int:
    async def main() -> int:
        producer = Producer.from_settings(settings_of(env))
        try:
            outcomes = await producer.statuses(ids)
        finally:
            await producer.close()
        return sum(1 for o in outcomes if o is not None and o["status"] != "pending")

    try:
        return asyncio.run(main())
    except Exception:  # redis is down for the moment
        return -1


def wait_all(env: dict[str, str], ids: list[str], limit: float = 60) -> None:
    deadline = time.monotonic() + limit
    while done_count(env, ids) != len(ids):
        assert time.monotonic() < deadline, f"{done_count(env, ids)} of {len(ids)} done"
        time.sleep(0.1)


def check_exactly_once(env: dict[str, str], ids: list[str]) -> None:
    """One stored result per job, all done, none unexpected; no pending entries, no DLQ."""
    settings = settings_of(env)
    keys = keys_of(settings)

    async def main() -> None:
        client = connect(settings)
        try:
            stored = [key async for key in client.scan_iter(f"{keys.prefix}:result:*")]
            assert sorted(stored) == sorted(keys.result(i) for i in ids)
            outcomes = await Producer(client, keys, 10**9).statuses(ids)
            assert all(o is not None and o["status"] == "done" for o in outcomes)
            assert all(o is not None and o["id"] == i for o, i in zip(outcomes, ids, strict=True))
            assert (await client.xpending(keys.stream, keys.group))["pending"] == 0
            assert await client.xlen(keys.dead) == 0
        finally:
            await client.aclose()

    asyncio.run(main())


@pytest.mark.timeout(300)  # its own wait allows 150 s for the drain, past the default 120 s
def test_workers_killed_and_restarted_lose_nothing(
    redis_server: RedisServer, worker_factory: WorkerFactory
) -> None:
    env = env_for(redis_server.url)
    workers = [worker_factory(env) for _ in range(WORKERS)]
    ids = enqueue(env)
    rng = random.Random(6)
    # Kills at points of progress, not times, so that each lands mid-run however fast the
    # machine drains: after a random share of the jobs, from 5% to 75%.
    marks = sorted(rng.uniform(0.05, 0.75) for _ in range(KILLS))
    for mark in marks:
        while (done := done_count(env, ids)) < mark * len(ids):
            time.sleep(0.02)
        assert done < len(ids)  # the kill lands while work remains
        victim = rng.randrange(len(workers))
        workers[victim].stop(signal.SIGKILL)
        workers[victim] = worker_factory(env)
    wait_all(env, ids, limit=150)
    check_exactly_once(env, ids)


def test_a_stopped_worker_resumes_harmlessly(
    redis_server: RedisServer, worker_factory: WorkerFactory
) -> None:
    env = env_for(redis_server.url)
    stalled, _ = worker_factory(env), worker_factory(env)
    ids = enqueue(env, 600)
    time.sleep(0.2)
    stalled.proc.send_signal(signal.SIGSTOP)
    time.sleep(1.8)  # past the reclaim time: the other worker takes its jobs
    stalled.proc.send_signal(signal.SIGCONT)
    wait_all(env, ids)
    check_exactly_once(env, ids)
    assert stalled.proc.poll() is None


def test_sigterm_drains_within_the_grace_period(
    redis_server: RedisServer, worker_factory: WorkerFactory
) -> None:
    env = env_for(redis_server.url)
    worker = worker_factory(env)
    ids = enqueue(env, 600)
    time.sleep(0.3)
    assert done_count(env, ids) < len(ids)
    started = time.monotonic()
    assert worker.stop(signal.SIGTERM, timeout=10) == 0, worker.output()
    assert time.monotonic() - started < 5 + 1
    worker_factory(env)
    wait_all(env, ids)
    check_exactly_once(env, ids)


def test_redis_killed_with_aof_loses_no_acknowledged_job(
    tmp_path: Path, worker_factory: WorkerFactory
) -> None:
    durable = RedisServer(
        free_port(), tmp_path, ("--save", "", "--appendonly", "yes", "--appendfsync", "always")
    )
    durable.start()
    try:
        env = env_for(durable.url)
        worker = worker_factory(env)
        ids = enqueue(env, 600)
        time.sleep(0.3)
        assert done_count(env, ids) < len(ids)
        durable.stop(signal.SIGKILL)
        time.sleep(0.5)
        durable.start()
        wait_all(env, ids)
        check_exactly_once(env, ids)
        assert "retrying in" in worker.output()  # it did lose the connection, and came back
    finally:
        durable.stop()
