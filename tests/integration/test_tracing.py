"""Traces across HTTP, the batcher, the engine and the queue, seen by an in-memory exporter.

The server, the model and the worker run in this process (a real uvicorn on a free port, the
real ONNX model, a real redis-server), so that one exporter sees every span."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import redis.asyncio as redis
import uvicorn
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from inferline.api.factory import create_app
from inferline.config import Settings
from inferline.queue.worker import Worker
from inferline.service import Service
from inferline.telemetry import logs, tracing
from tests.conftest import RedisServer, free_port, model_dir

pytestmark = pytest.mark.integration

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


@asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[tuple[Service, httpx.AsyncClient]]:
    service = Service(settings)
    config = uvicorn.Config(
        create_app(settings, service),
        host="127.0.0.1",
        port=settings.port,
        lifespan="on",
        log_config=None,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    url = f"http://127.0.0.1:{settings.port}"
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        for _ in range(600):
            try:
                if (await client.get("/health/ready")).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.05)
        try:
            yield service, client
        finally:
            server.should_exit = True
            await task


def by_name(spans: tuple[ReadableSpan, ...], prefix: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name.startswith(prefix)]


def parent_id(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def test_http_request_batch_and_engine_form_one_trace(
    exporter: InMemorySpanExporter, tmp_path: Path
) -> None:
    settings = Settings(model_dir=model_dir(), port=free_port(), access_log=True)
    stream = io.StringIO()

    async def scenario() -> None:
        async with serving(settings) as (_, client):
            exporter.clear()  # the warm-up's batches
            logs.configure("info", stream)
            try:
                response = await client.post(
                    "/predict", json={"text": "great value"}, headers={"traceparent": PARENT}
                )
            finally:
                logs.flush()
            assert response.status_code == 200

    asyncio.run(scenario())
    spans = exporter.get_finished_spans()
    (server,) = by_name(spans, "POST /predict")
    (batch,) = by_name(spans, "batch sentiment")
    (engine,) = by_name(spans, "onnx infer")

    # The caller's trace continues: server span -> batch -> engine, one trace id.
    assert f"{server.context.trace_id:032x}" == TRACE_ID
    assert server.kind is SpanKind.SERVER
    assert parent_id(server) == 0x00F067AA0BA902B7
    assert batch.context.trace_id == engine.context.trace_id == server.context.trace_id
    assert parent_id(batch) == server.context.span_id
    assert parent_id(engine) == batch.context.span_id
    assert [link.context.span_id for link in batch.links] == [server.context.span_id]
    assert batch.attributes is not None and server.attributes is not None
    assert batch.attributes["batch.size"] == 1
    assert int(str(batch.attributes["batch.tokens"])) > 0
    assert server.attributes["http.response.status_code"] == 200
    assert server.attributes["inferline.model"] == "sentiment"
    assert float(str(server.attributes["inferline.queue_wait_seconds"])) >= 0

    # The access-log line carries the same trace and span ids.
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    (access,) = [line for line in lines if line["logger"] == "inferline.access"]
    assert access["trace_id"] == TRACE_ID
    assert access["span_id"] == f"{server.context.span_id:016x}"
    assert access["status"] == "200" and access["model"] == "sentiment"
    assert access["items"] == 1 and access["tokens"] > 0
    assert "texts" not in access  # never, unless INFERLINE_LOG_TEXTS is on


def test_a_batch_links_every_member_request(exporter: InMemorySpanExporter) -> None:
    # A long delay and room for the lot: the four requests share one batch.
    settings = Settings(
        model_dir=model_dir(),
        port=free_port(),
        max_delay_ms=200,
        max_padding_ratio=100,
        access_log=False,
    )

    async def scenario() -> None:
        async with serving(settings) as (_, client):
            exporter.clear()
            texts = ["good", "bad", "fine thing", "awful product"]
            replies = await asyncio.gather(
                *(client.post("/predict", json={"text": t}) for t in texts)
            )
            assert all(r.status_code == 200 for r in replies)

    asyncio.run(scenario())
    spans = exporter.get_finished_spans()
    servers = by_name(spans, "POST /predict")
    batches = by_name(spans, "batch sentiment")
    assert len(servers) == 4
    linked = {link.context.span_id for batch in batches for link in batch.links}
    assert linked == {s.context.span_id for s in servers}
    assert sum(int(str((b.attributes or {})["batch.size"])) for b in batches) == 4


def test_a_job_is_traced_from_submission_through_the_worker(
    exporter: InMemorySpanExporter, redis_server: RedisServer
) -> None:
    settings = Settings(
        model_dir=model_dir(),
        port=free_port(),
        redis_url=redis_server.url,
        queue_prefix=f"trace{free_port()}",
        access_log=False,
    )

    async def scenario() -> None:
        async with serving(settings) as (service, client):
            exporter.clear()
            reply = await client.post(
                "/v1/jobs",
                json={"model": "sentiment", "inputs": ["a lovely mug"]},
                headers={"traceparent": PARENT},
            )
            assert reply.status_code == 202
            connection = redis.Redis.from_url(settings.redis_url or "", decode_responses=True)
            worker = Worker(service, connection, settings, "tracer", service.metrics)
            await worker.ensure_group()
            assert await worker.step() == 1
            await connection.aclose()

    asyncio.run(scenario())
    spans = exporter.get_finished_spans()
    (submit,) = by_name(spans, "POST /v1/jobs")
    (process,) = by_name(spans, "process ")
    (batch,) = by_name(spans, "batch sentiment")
    (engine,) = by_name(spans, "onnx infer")
    trace_ids = {s.context.trace_id for s in (submit, process, batch, engine)}
    assert trace_ids == {int(TRACE_ID, 16)}
    assert process.kind is SpanKind.CONSUMER
    assert parent_id(process) == submit.context.span_id
    assert [link.context.span_id for link in process.links] == [submit.context.span_id]
    assert parent_id(batch) == process.context.span_id
    assert parent_id(engine) == batch.context.span_id
    attributes = process.attributes or {}
    assert attributes["messaging.system"] == "redis"
    assert attributes["messaging.destination.name"] == f"{settings.queue_prefix}:jobs"
    assert attributes["messaging.operation.type"] == "process"
    assert attributes["messaging.batch.message_count"] == 1
    assert "messaging.message.id" in attributes


def test_tracing_is_off_without_an_exporter() -> None:
    assert not tracing.configured_by_env({})
    assert not tracing.configured_by_env({"OTEL_TRACES_EXPORTER": "none"})
    assert not tracing.configured_by_env(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318", "OTEL_SDK_DISABLED": "true"}
    )
    assert tracing.configured_by_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318"})
    assert tracing.configured_by_env({"OTEL_TRACES_EXPORTER": "console"})
