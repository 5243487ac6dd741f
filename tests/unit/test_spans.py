"""The lean request spans: what the SDK would record, through the provider's own parts."""

from __future__ import annotations

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import SpanKind, StatusCode, format_trace_id, get_current_span

from inferline.telemetry import tracing

PARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_a_server_span_continues_the_callers_trace_and_is_current(
    exporter: InMemorySpanExporter,
) -> None:
    traced = tracing.open_server("GET /x", {"traceparent": PARENT}, {"http.route": "/x"})
    assert get_current_span() is traced.span
    carrier: dict[str, str] = {}
    tracing.inject(carrier)
    traced.span.set_attributes({"http.response.status_code": 200})
    traced.span.set_status(StatusCode.ERROR, "boom")
    traced.close()
    assert not get_current_span().get_span_context().is_valid
    (span,) = exporter.get_finished_spans()
    assert span.name == "GET /x"
    assert span.kind is SpanKind.SERVER
    assert format_trace_id(span.context.trace_id) == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert span.parent is not None and span.parent.span_id == 0x00F067AA0BA902B7
    assert dict(span.attributes or {}) == {"http.route": "/x", "http.response.status_code": 200}
    assert span.status.status_code is StatusCode.ERROR and span.status.description == "boom"
    assert span.start_time is not None and span.end_time is not None
    assert span.start_time <= span.end_time
    assert carrier["traceparent"].split("-")[2] == f"{span.context.span_id:016x}"


def test_an_ended_span_ignores_changes_and_ends_once(exporter: InMemorySpanExporter) -> None:
    with tracing.server_span("GET /y", {}, {}) as span:
        assert span is not None and span.is_recording()
        span.add_event("queued", {"depth": 3})
        span.record_exception(ValueError("bad"))
    assert not span.is_recording()
    span.set_attribute("late", 1)
    span.update_name("renamed")
    span.end()
    (done,) = exporter.get_finished_spans()
    assert done.name == "GET /y" and "late" not in (done.attributes or {})
    assert [e.name for e in done.events] == ["queued", "exception"]
    assert done.events[1].attributes is not None
    assert done.events[1].attributes["exception.type"] == "ValueError"
    assert done.parent is None  # no traceparent: a new trace


def test_the_spans_encode_as_otlp(exporter: InMemorySpanExporter) -> None:
    with tracing.server_span("GET /z", {"traceparent": PARENT}, {"a": 1}) as member:
        assert member is not None
        with tracing.batch_span("sentiment", "onnx", [member], 1, 12):
            pass
    request = encode_spans(exporter.get_finished_spans())
    names = [s.name for r in request.resource_spans for ss in r.scope_spans for s in ss.spans]
    assert sorted(names) == ["GET /z", "batch sentiment", "onnx infer"]


def test_the_providers_sampler_decides() -> None:
    memory = InMemorySpanExporter()
    provider = TracerProvider(sampler=ParentBased(TraceIdRatioBased(0.0)))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracing.install(provider)
    try:
        with tracing.server_span("GET /a", {}, {}) as dropped:
            assert dropped is not None and not dropped.is_recording()
            assert dropped.get_span_context().is_valid  # still propagated, unsampled
        with tracing.server_span("GET /b", {"traceparent": PARENT}, {}) as kept:
            assert kept is not None and kept.is_recording()  # the sampled parent wins
    finally:
        tracing.install(None)
    assert [s.name for s in memory.get_finished_spans()] == ["GET /b"]


def test_the_default_sampler_follows_an_unsampled_parent(exporter: InMemorySpanExporter) -> None:
    unsampled = PARENT[:-2] + "00"
    with tracing.server_span("GET /c", {"traceparent": unsampled}, {}) as span:
        assert span is not None and not span.is_recording()
        assert not span.get_span_context().trace_flags.sampled
    assert exporter.get_finished_spans() == ()


def test_a_batch_joins_its_oldest_sampled_members_trace() -> None:
    """Under parent-based sampling, an unsampled oldest member made the batch and engine
    spans unsampled, and a sampled request in the same batch lost them."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(sampler=ParentBased(TraceIdRatioBased(0.0)))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracing.install(provider)
    unsampled = "00-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa1-bbbbbbbbbbbbbbb1-00"
    try:
        with (
            tracing.server_span("POST /u", {"traceparent": unsampled}, {}) as first,
            tracing.server_span("POST /s", {"traceparent": PARENT}, {}) as second,
        ):
            assert first is not None and second is not None
            with tracing.batch_span("embedding", "onnx", [first, second], 2, 9):
                pass
    finally:
        tracing.install(None)
    spans = {s.name: s for s in memory.get_finished_spans()}
    assert sorted(spans) == ["POST /s", "batch embedding", "onnx infer"]
    batch = spans["batch embedding"]
    assert batch.context.trace_id == spans["POST /s"].context.trace_id
    assert len(batch.links) == 2  # both members, the unsampled one included


@pytest.mark.parametrize("exporters", ["zipkin", "none,jaeger"])
def test_no_supported_exporter_leaves_tracing_off(
    monkeypatch: pytest.MonkeyPatch, exporters: str
) -> None:
    """Spans were recorded, and trace ids logged, with nothing to send them to."""
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", exporters)
    assert not tracing.configure_from_env()
    assert not tracing.enabled()
