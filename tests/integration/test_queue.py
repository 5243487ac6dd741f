"""The queue library against a real redis-server: producer, worker on the real model,
idempotency, reclaim, dead letters, trimming and backpressure."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, cast

import pytest
import redis.asyncio as redis

from inferline.config import Settings
from inferline.errors import EngineError, InvalidInput, Overloaded, Unavailable
from inferline.queue.keys import connect, keys_of
from inferline.queue.producer import Producer
from inferline.queue.worker import Job, Worker
from inferline.service import Service
from tests.conftest import RedisServer, ServerFactory, free_port, model_dir

pytestmark = pytest.mark.integration


def settings_for(redis_server: RedisServer, **overrides: Any) -> Settings:
    return Settings(
        model_dir=model_dir(),
        redis_url=redis_server.url,
        queue_prefix=f"test-{uuid.uuid4().hex[:8]}",
        queue_block_ms=100,
        **overrides,
    )


class PoisonService(Service):
    """The real service, except that texts containing POISON make the engine fail."""

    async def results(
        self, name: str, texts: Sequence[str], deadline: float | None = None
    ) -> list[dict[str, Any]]:
        if any("POISON" in t for t in texts):
            said = RuntimeError("CUDA out of memory")  # a remote engine's Said, say
            raise EngineError("poisoned batch in /srv/models/secret.onnx") from said
        return await super().results(name, texts, deadline)


Body = Callable[[Producer, Worker, redis.Redis], Awaitable[None]]


def run(settings: Settings, body: Body, service_class: type[Service] = Service) -> None:
    async def main() -> None:
        service = service_class(settings)
        await service.start()
        client = connect(settings, block_ms=settings.queue_block_ms)
        producer = Producer.from_settings(settings)
        worker = Worker(service, client, settings, "w1")
        try:
            await body(producer, worker, client)
        finally:
            await producer.close()
            await client.aclose()
            await service.close(1)

    asyncio.run(main())


async def drain(worker: Worker, producer: Producer, ids: list[str], limit: float = 20) -> None:
    """Step the worker until every job has an outcome."""

    async def loop() -> None:
        await worker.ensure_group()
        while True:
            outcomes = await producer.statuses(ids)
            if all(o is not None and o["status"] != "pending" for o in outcomes):
                return
            await worker.step()

    await asyncio.wait_for(loop(), limit)


def test_submit_run_and_read(redis_server: RedisServer) -> None:
    async def body(producer: Producer, worker: Worker, client: redis.Redis) -> None:
        sentiment, new = await producer.submit("sentiment", ["I love it.", "Awful."])
        assert new
        embedding, _ = await producer.submit("embedding", ["a red bicycle"])
        assert await producer.status(sentiment) == {"id": sentiment, "status": "pending"}
        assert await producer.status("nope") is None
        await drain(worker, producer, [sentiment, embedding])
        done = await producer.status(sentiment)
        assert done is not None and done["status"] == "done"
        assert [r["label"] for r in done["results"]] == ["Positive", "Negative"]
        emb = await producer.status(embedding)
        assert emb is not None and len(emb["results"][0]["embedding"]) == 384
        keys = keys_of(worker.settings)
        assert (await client.xpending(keys.stream, keys.group))["pending"] == 0
        sample = worker.metrics.registry.get_sample_value
        labels = {"protocol": "queue", "model": "sentiment", "status": "done"}
        assert sample("inferline_requests_total", labels) == 1
        assert sample("inferline_request_duration_seconds_count", labels) == 1

    run(settings_for(redis_server), body)


def test_the_first_job_creates_the_workers_group_for_the_autoscaler(
    redis_server: RedisServer,
) -> None:
    """With no worker yet (scaled to zero, or Redis emptied meanwhile), KEDA can only wake
    one through the group's lag: the first job brings the group, and lag counts it."""
    settings = settings_for(redis_server)
    keys = keys_of(settings)

    async def main() -> None:
        producer = Producer.from_settings(settings)
        client = connect(settings)
        try:
            assert not await client.exists(keys.stream)
            await producer.submit("sentiment", ["first"])
            await producer.submit("sentiment", ["second"])
            (group,) = await client.xinfo_groups(keys.stream)
            assert group["name"] == keys.group and group["lag"] == 2
            assert group["consumers"] == 0 and group["pending"] == 0
        finally:
            await producer.close()
            await client.aclose()

    asyncio.run(main())


def test_caller_id_is_an_idempotency_key(redis_server: RedisServer) -> None:
    async def body(producer: Producer, worker: Worker, client: redis.Redis) -> None:
        assert await producer.submit("sentiment", ["good"], "order-1") == ("order-1", True)
        assert await producer.submit("sentiment", ["good"], "order-1") == ("order-1", False)
        await drain(worker, producer, ["order-1"])
        assert await producer.submit("sentiment", ["good"], "order-1") == ("order-1", False)
        keys = keys_of(worker.settings)
        await worker.trim()
        assert await client.xlen(keys.stream) <= 1  # one entry ever, and acknowledged
        assert worker.processed == 1

    run(settings_for(redis_server), body)


def test_bad_requests_are_refused(redis_server: RedisServer) -> None:
    async def body(producer: Producer, worker: Worker, client: redis.Redis) -> None:
        with pytest.raises(InvalidInput):
            await producer.submit("translation", ["x"])
        with pytest.raises(InvalidInput):
            await producer.submit("sentiment", ["x"], "has space")

    run(settings_for(redis_server), body)


def test_a_full_stream_refuses_new_jobs(redis_server: RedisServer) -> None:
    async def body(producer: Producer, worker: Worker, client: redis.Redis) -> None:
        for i in range(3):
            await producer.submit("sentiment", ["fine"], f"j{i}")
        with pytest.raises(Overloaded):
            await producer.submit("sentiment", ["fine"], "j3")
        assert await producer.status("j3") is None  # refused whole: no idempotency key left
        await drain(worker, producer, ["j0", "j1", "j2"])
        # Done jobs leave room at once, before a trim removes their entries: the bound
        # counts the group's lag and pending entries, not XLEN.
        assert await client.xlen(keys_of(worker.settings).stream) == 3
        assert (await producer.submit("sentiment", ["fine"], "j3"))[1]
        await worker.trim()  # and the acknowledged history still goes

    run(settings_for(redis_server, queue_max_len=3), body)


def test_done_entries_behind_a_held_job_are_capped(redis_server: RedisServer) -> None:
    """The bound counts jobs not yet done, but a job held pending for long stops the trim,
    and done entries pile up behind it: the stream's length is capped at twice the bound."""

    async def body(producer: Producer, worker: Worker, client: redis.Redis) -> None:
        keys = keys_of(worker.settings)
        await producer.submit("sentiment", ["held"], "held")
        await client.xreadgroup(keys.group, "holder", {keys.stream: ">"}, count=1)  # never acked
        for i in range(5):
            await producer.submit("sentiment", ["done"], f"done-{i}")
            read: Any = await client.xreadgroup(keys.group, "fast", {keys.stream: ">"}, count=1)
            await client.xack(keys.stream, keys.group, read[0][1][0][0])
        assert await client.xlen(keys.stream) == 6  # 1 pending and 5 done: 2 x 3
        with pytest.raises(Overloaded):
            await producer.submit("sentiment", ["one more"], "refused")

    run(settings_for(redis_server, queue_max_len=3), body)


def test_poison_jobs_go_to_the_dead_letter_stream(redis_server: RedisServer) -> None:
    settings = settings_for(
        redis_server, queue_max_deliveries=2, queue_reclaim_idle_s=0.2, queue_read_count=8
    )

    async def body(producer: Producer, worker: Worker, client: redis.Redis) -> None:
        texts = [f"POISON {i}" if i % 4 == 0 else f"a fine review {i}" for i in range(12)]
        ids = [(await producer.submit("sentiment", [t], f"p{i}"))[0] for i, t in enumerate(texts)]
        await drain(worker, producer, ids)
        outcomes = await producer.statuses(ids)
        for text, outcome in zip(texts, outcomes, strict=True):
            assert outcome is not None
            assert outcome["status"] == ("failed" if "POISON" in text else "done"), outcome
            if "POISON" in text:  # the engine's words (a path here) stay in log and DLQ
                assert "secret" not in outcome["error"], outcome
                assert "last error: internal error (id " in outcome["error"], outcome
        keys = keys_of(settings)
        dead = cast(list[tuple[str, dict[str, str]]], await client.xrange(keys.dead))
        assert sorted(fields["id"] for _, fields in dead) == ["p0", "p4", "p8"]
        assert all(int(fields["deliveries"]) == 2 for _, fields in dead)
        assert "poisoned batch" in dead[0][1]["error"]
        assert "(CUDA out of memory)" in dead[0][1]["error"]  # the cause, for the operator
        assert (await client.xpending(keys.stream, keys.group))["pending"] == 0

    run(settings, body, PoisonService)


def test_bytes_that_are_not_utf8_fail_their_job_alone(redis_server: RedisServer) -> None:
    """A foreign producer's XADD with raw bytes: the worker once died on each delivery, and
    the jobs read with it stayed pending for ever."""

    async def body(producer: Producer, worker: Worker, client: redis.Redis) -> None:
        keys = keys_of(worker.settings)
        raw = redis.Redis.from_url(redis_server.url)  # bytes in, bytes out
        Fields = dict[Any, Any]  # what xadd takes: str or bytes values
        bad_inputs: Fields = {"id": "bad-inputs", "model": "sentiment", "inputs": b'["caf\xe9"]'}
        bad_id: Fields = {"id": b"bad-\xff", "model": "sentiment", "inputs": b'["fine"]'}
        bad_model: Fields = {"id": "bad-model", "model": b"senti\xe9", "inputs": b'["fine"]'}
        await producer.submit("sentiment", ["before"], "good-1")
        entries = [await raw.xadd(keys.stream, f) for f in (bad_inputs, bad_id, bad_model)]
        await producer.submit("sentiment", ["after"], "good-2")
        await raw.aclose()
        ids = [e.decode() if isinstance(e, bytes) else e for e in entries]
        named = ["good-1", "good-2", "bad-inputs", ids[1], ids[2]]
        await drain(worker, producer, named)
        good_1, good_2, *bad = await producer.statuses(named)
        assert good_1 is not None and good_1["status"] == "done"
        assert good_2 is not None and good_2["status"] == "done"
        assert [o["status"] if o else None for o in bad] == ["failed"] * 3
        assert bad[0] is not None and "not a list of texts" in bad[0]["error"]
        assert bad[1] is not None and "not UTF-8" in bad[1]["error"]
        sample = worker.metrics.registry.get_sample_value  # one label for an unknown model
        assert sample("inferline_jobs_total", {"model": "none", "outcome": "failed"}) == 2
        assert (await client.xpending(keys.stream, keys.group))["pending"] == 0

    run(settings_for(redis_server), body)


def test_a_foreign_job_with_an_id_outside_the_rule_fails_under_its_entry_id(
    redis_server: RedisServer,
) -> None:
    """GET /v1/jobs/{id} could never read the result of such an id (it answers 422), and an
    empty one was stored as the prefix itself. The stream entry id names it instead."""

    async def body(producer: Producer, worker: Worker, client: redis.Redis) -> None:
        keys = keys_of(worker.settings)
        bad = ["with spaces", "", "abc\n", "x" * 129]
        entries = [
            await client.xadd(keys.stream, {"id": job_id, "model": "sentiment", "inputs": '["ok"]'})
            for job_id in bad
        ]
        named = [str(entry) for entry in entries]
        await drain(worker, producer, named)
        for outcome in await producer.statuses(named):
            assert outcome is not None and outcome["status"] == "failed", outcome
            assert outcome["model"] == "sentiment" and "'id' is not 1 to 128" in outcome["error"]
        assert await client.exists(keys.result("")) == 0
        assert (await client.xpending(keys.stream, keys.group))["pending"] == 0

    run(settings_for(redis_server), body)


def test_a_stalled_workers_jobs_are_reclaimed(redis_server: RedisServer) -> None:
    settings = settings_for(redis_server, queue_reclaim_idle_s=0.2)

    async def body(producer: Producer, worker: Worker, client: redis.Redis) -> None:
        keys = keys_of(settings)
        job_id, _ = await producer.submit("sentiment", ["read, then the worker dies"])
        await worker.ensure_group()
        # Another consumer reads the job and never acknowledges it.
        await client.xreadgroup(keys.group, "dead-worker", {keys.stream: ">"}, count=10)
        await asyncio.sleep(0.3)
        await drain(worker, producer, [job_id])
        outcome = await producer.status(job_id)
        assert outcome is not None and outcome["status"] == "done"
        assert (await client.xpending(keys.stream, keys.group))["pending"] == 0

    run(settings, body)


def test_a_job_that_crashed_its_workers_is_dead_lettered_with_the_reason(
    redis_server: RedisServer,
) -> None:
    settings = settings_for(redis_server, queue_reclaim_idle_s=0.1, queue_max_deliveries=2)

    async def body(producer: Producer, worker: Worker, client: redis.Redis) -> None:
        keys = keys_of(settings)
        job_id, _ = await producer.submit("sentiment", ["each worker that reads it dies"])
        await worker.ensure_group()
        await client.xreadgroup(keys.group, "dead-1", {keys.stream: ">"}, count=10)
        for name in ("dead-2", "dead-3"):  # deliveries 2 and 3, never acknowledged
            await asyncio.sleep(0.15)
            await client.xautoclaim(keys.stream, keys.group, name, 100, "0-0")
        await asyncio.sleep(0.15)
        await drain(worker, producer, [job_id])
        outcome = await producer.status(job_id)
        assert outcome is not None and outcome["error"] == "gave up after 3 deliveries"
        dead = cast(list[tuple[str, dict[str, str]]], await client.xrange(keys.dead))
        assert [fields["error"] for _, fields in dead] == ["gave up after 3 deliveries"]

    run(settings, body)


def test_jobs_http_would_refuse_fail_at_once(redis_server: RedisServer) -> None:
    """Jobs from the library, `inferline submit` or a foreign XADD get POST /v1/jobs' checks."""
    settings = settings_for(redis_server)

    async def body(producer: Producer, worker: Worker, client: redis.Redis) -> None:
        jobs = {
            "blank": ["   "],
            "nul": ["a\x00b"],
            "too-many": ["fine"] * (settings.max_texts_per_request + 1),
            "too-long": ["x" * (settings.max_text_chars + 1)],
        }
        for job_id, texts in jobs.items():
            await producer.submit("sentiment", texts, job_id)
        await drain(worker, producer, list(jobs))
        outcomes = dict(zip(jobs, await producer.statuses(list(jobs)), strict=True))
        errors = {k: o["error"] for k, o in outcomes.items() if o and o["status"] == "failed"}
        assert errors == {
            "blank": "'inputs[0]' is empty",
            "nul": "'inputs[0]' contains a NUL character",
            "too-many": f"'inputs' has {settings.max_texts_per_request + 1} texts; "
            f"the limit is {settings.max_texts_per_request} per request",
            "too-long": f"'inputs[0]' has {settings.max_text_chars + 1} characters; "
            f"the limit is {settings.max_text_chars}",
        }
        assert await client.xlen(keys_of(settings).dead) == 0  # failed, not dead-lettered

    run(settings, body)


def test_a_late_second_run_does_not_outlive_the_first_result(redis_server: RedisServer) -> None:
    """A job run twice (a reclaim after a stall) is written twice: the second write must not
    push the idempotency key's expiry past the stored result's, or the job would read
    "pending" again once the result expired."""
    settings = settings_for(redis_server, queue_result_ttl_s=60)

    async def body(producer: Producer, worker: Worker, client: redis.Redis) -> None:
        keys = keys_of(settings)
        job_id, _ = await producer.submit("sentiment", ["run twice"], "twice")
        await drain(worker, producer, [job_id])
        first = await producer.status(job_id)
        await asyncio.sleep(1.1)
        late = Job("0-1", job_id, "sentiment", ["run twice"])
        late.finish("done", [{"label": "from the late run"}])
        await worker._write([late])
        result_ttl = await client.pttl(keys.result(job_id))
        assert 0 < await client.pttl(keys.job(job_id)) <= result_ttl + 50
        assert await producer.status(job_id) == first  # the first result stays

    run(settings, body)


def test_without_redis_the_queue_is_unavailable() -> None:
    with pytest.raises(Unavailable, match="INFERLINE_REDIS_URL"):
        Producer.from_settings(Settings(redis_url=None))


class GatedService(Service):
    """The real service, holding every job until the gate opens."""

    gate: asyncio.Event

    async def results(
        self, name: str, texts: Sequence[str], deadline: float | None = None
    ) -> list[dict[str, Any]]:
        await self.gate.wait()
        return await super().results(name, texts, deadline)


def test_a_worker_holds_at_most_its_prefetch(redis_server: RedisServer) -> None:
    settings = settings_for(redis_server, queue_read_count=4, queue_prefetch=12)

    async def body(producer: Producer, worker: Worker, client: redis.Redis) -> None:
        keys = keys_of(settings)
        gate = cast(GatedService, worker.runner).gate = asyncio.Event()
        ids = [(await producer.submit("sentiment", [f"text {i}"]))[0] for i in range(20)]
        await worker.ensure_group()
        running = asyncio.create_task(worker.run())
        for _ in range(200):
            if (await client.xpending(keys.stream, keys.group))["pending"] >= 12:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.3)  # time for more reads, if the bound did not hold
        assert (await client.xpending(keys.stream, keys.group))["pending"] == 12
        gate.set()
        for _ in range(1000):
            outcomes = await producer.statuses(ids)
            if all(o is not None and o["status"] == "done" for o in outcomes):
                break
            await asyncio.sleep(0.01)
        worker.stop()
        await asyncio.wait_for(running, 10)
        assert all(o is not None and o["status"] == "done" for o in await producer.statuses(ids))
        assert (await client.xpending(keys.stream, keys.group))["pending"] == 0

    run(settings, body, GatedService)


def test_a_down_upstream_holds_its_jobs_and_the_other_models_flow(
    redis_server: RedisServer, server_factory: ServerFactory, tmp_path: Path
) -> None:
    """``embedding`` on a remote OIP upstream that is down: its job is held in hand (its
    lease renewed, no delivery spent) while ``sentiment`` jobs run; it runs once the
    upstream comes up."""
    ports = {"INFERLINE_PORT": str(free_port()), "INFERLINE_GRPC_PORT": str(free_port())}
    config = tmp_path / "models.toml"
    config.write_text(
        f"""
[models.embedding]
engine = "oip"
url = "http://127.0.0.1:{ports["INFERLINE_PORT"]}"
health_interval_s = 0.2
"""
    )
    settings = settings_for(redis_server, models_config=config, queue_reclaim_idle_s=1.0)

    async def body(producer: Producer, worker: Worker, client: redis.Redis) -> None:
        keys = keys_of(settings)
        assert not worker.runner.model_ready("embedding")  # nothing listens there yet
        held, _ = await producer.submit("embedding", ["waits for its upstream"])
        task = asyncio.create_task(worker.run())
        try:
            local, _ = await producer.submit("sentiment", ["runs meanwhile"])
            await wait_for_status(producer, local, "done")
            await asyncio.sleep(2.5)  # past the reclaim idle time: its lease was renewed
            assert await producer.status(held) == {"id": held, "status": "pending"}
            (entry,) = await client.xpending_range(keys.stream, keys.group, "-", "+", 10)
            assert entry["times_delivered"] == 1 and entry["consumer"] == worker.name
            await asyncio.to_thread(server_factory, ports)  # the upstream comes up
            outcome = await wait_for_status(producer, held, "done")
            assert len(outcome["results"][0]["embedding"]) == 384
        finally:
            worker.stop()
            await task

    run(settings, body)


async def wait_for_status(
    producer: Producer, job_id: str, status: str, limit: float = 60
) -> dict[str, Any]:
    async with asyncio.timeout(limit):
        while True:
            outcome = await producer.status(job_id)
            if outcome is not None and outcome["status"] == status:
                return outcome
            await asyncio.sleep(0.05)
