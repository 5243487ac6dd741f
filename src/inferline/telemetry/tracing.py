"""OpenTelemetry tracing, configured only by the standard ``OTEL_*`` variables.

Off unless an exporter is configured (``OTEL_TRACES_EXPORTER`` other than ``none``, or an
``OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT``); ``OTEL_SDK_DISABLED=true`` forces it off. When off,
every function here returns at once, so the hot path pays one check.

Spans: one server span per request (HTTP, gRPC), one ``process`` span per read of queue
jobs, one span per batch (parent: its oldest member; one link per member), and one engine
span inside it, all started by ``spans.Recorder`` from the provider's own sampler, ids and
processors (a fraction of the SDK span's cost). See docs/observability.md.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span

    from inferline.telemetry.spans import Recorder

log = logging.getLogger(__name__)

_rec: Recorder | None = None  # set by install(): starts the spans; None while tracing is off


class _Otel(NamedTuple):
    context: Any
    propagate: Any
    trace: Any
    Link: Any
    SpanKind: Any


_otel: _Otel
TRACE_FIELDS = ("traceparent", "tracestate")
_HEADER_FIELDS = {b"traceparent": "traceparent", b"tracestate": "tracestate", b"baggage": "baggage"}


def enabled() -> bool:
    return _rec is not None


def configured_by_env(env: Mapping[str, str] = os.environ) -> bool:
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporters:
        return exporters != "none"
    return bool(
        env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


def configure_from_env(default_service: str = "inferline") -> bool:
    """Install a tracer provider with the exporters ``OTEL_*`` asks for; True when on.

    The SDK itself reads the rest: OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES,
    OTEL_TRACES_SAMPLER[_ARG], OTEL_BSP_*, OTEL_EXPORTER_OTLP_* (endpoint, headers, ...)."""
    if not configured_by_env():
        return False
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    attributes = {} if os.environ.get("OTEL_SERVICE_NAME") else {"service.name": default_service}
    provider = TracerProvider(resource=Resource.create(attributes))
    names = [
        n.strip().lower() for n in (os.environ.get("OTEL_TRACES_EXPORTER") or "otlp").split(",")
    ]
    exporters = [e for e in (_exporter(n) for n in names if n != "none") if e is not None]
    if not exporters:  # spans that go nowhere would cost for nothing
        log.warning("tracing off: OTEL_TRACES_EXPORTER names no supported exporter")
        return False
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    install(provider)
    # The SDK's propagator warns once per request with a traceparent over its length limit:
    # a client could fill the log. Such a header starts a new trace, which says enough.
    logging.getLogger("opentelemetry.trace.propagation.tracecontext").setLevel(logging.ERROR)
    log.info("tracing on", extra={"exporters": os.environ.get("OTEL_TRACES_EXPORTER", "otlp")})
    return True


def _exporter(name: str) -> Any:
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    if name != "otlp":
        log.warning("OTEL_TRACES_EXPORTER %r is not supported: use otlp or console", name)
        return None
    protocol = (
        os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    )
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HttpExporter,
    )

    return HttpExporter()


def install(provider: TracerProvider | None) -> None:
    """Trace with ``provider`` (tests pass one with an in-memory exporter); None turns off."""
    global _otel, _rec  # noqa: PLW0603 - one tracer per process, like the SDK's provider
    if provider is None:
        _rec = None
        return
    from opentelemetry import context, propagate, trace
    from opentelemetry.trace import Link, SpanKind

    # Looked up once: an import statement on the request path costs a microsecond a call.
    _otel = _Otel(context, propagate, trace, Link, SpanKind)
    from inferline.telemetry.spans import Recorder

    _rec = Recorder.of(provider, "inferline")


def shutdown() -> None:
    """Flush spans still buffered (at exit)."""
    from opentelemetry import trace

    provider = trace.get_tracer_provider()
    if hasattr(provider, "shutdown"):
        provider.shutdown()


# -- context propagation ------------------------------------------------------------------


def carrier_of(headers: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    """The trace headers among raw (lower-case) HTTP header pairs."""
    carrier: dict[str, str] = {}
    for key, value in headers:
        name = _HEADER_FIELDS.get(key)
        if name is not None:
            carrier[name] = value.decode("latin-1")
    return carrier


def inject(carrier: MutableMapping[str, str]) -> None:
    """Add ``traceparent``/``tracestate`` of the current span (outgoing calls, stream
    entries); does nothing when tracing is off."""
    if _rec is not None:
        _otel.propagate.inject(carrier)


def _extract(carrier: Mapping[str, str]) -> Any:
    return _otel.propagate.extract(carrier) if carrier else None


# -- spans ----------------------------------------------------------------------------------


class Scope(NamedTuple):
    """A started span made current; ``close`` restores the context and ends it."""

    span: Span
    token: Any

    def close(self) -> None:
        _otel.context.detach(self.token)
        self.span.end()


def _made_current(span: Span) -> Scope:
    return Scope(span, _otel.context.attach(_otel.trace.set_span_in_context(span)))


def open_server(
    name: str, carrier: Mapping[str, str], attributes: Mapping[str, Any], kind: str = "SERVER"
) -> Scope:
    """The current span of one request, continuing the caller's trace (tracing is on)."""
    assert _rec is not None
    return _made_current(_rec.start(name, _extract(carrier), _otel.SpanKind[kind], attributes))


@contextlib.contextmanager
def server_span(
    name: str, carrier: Mapping[str, str], attributes: Mapping[str, Any], *, kind: str = "SERVER"
) -> Iterator[Span | None]:
    """``open_server`` as a block; yields None when tracing is off."""
    if _rec is None:
        yield None
        return
    scope = open_server(name, carrier, attributes, kind)
    try:
        yield scope.span
    finally:
        scope.close()


@contextlib.contextmanager
def consumer_span(
    name: str, carriers: list[Mapping[str, str]], attributes: Mapping[str, Any]
) -> Iterator[Span | None]:
    """A ``process`` span for messages read together: a child of the first message's
    creation context, with a link to each message's."""
    if _rec is None:
        yield None
        return
    trace = _otel.trace
    contexts = [trace.get_current_span(_extract(c)).get_span_context() for c in carriers]
    links = [_otel.Link(ctx) for ctx in contexts if ctx.is_valid]
    parent = _extract(carriers[0]) if carriers else None
    scope = _made_current(_rec.start(name, parent, _otel.SpanKind.CONSUMER, attributes, links))
    try:
        yield scope.span
    finally:
        scope.close()


@contextlib.contextmanager
def batch_span(
    model: str, engine: str, members: list[Span], size: int, tokens: int
) -> Iterator[None]:
    """A span for one batch and, inside it, one for the engine call (current while the
    engine runs, so that a remote engine passes it upstream). The batch belongs to its
    oldest sampled member's trace and links every member's span: under parent-based
    sampling, an unsampled parent would drop the batch from every member's trace."""
    if _rec is None:
        yield
        return
    trace = _otel.trace
    seen: set[int] = set()
    links = []
    for member in members:
        ctx = member.get_span_context()
        if ctx.span_id not in seen:
            seen.add(ctx.span_id)
            links.append(_otel.Link(ctx))
    sampled = [m for m in members if m.get_span_context().trace_flags.sampled]
    oldest = sampled[0] if sampled else members[0] if members else None
    parent = trace.set_span_in_context(oldest) if oldest is not None else None
    attributes: dict[str, str | int] = {
        "inferline.model": model,
        "batch.size": size,
        "batch.tokens": tokens,
        "batch.requests": len(links),
    }
    internal = _otel.SpanKind.INTERNAL
    batch = _rec.start(f"batch {model}", parent, internal, attributes, links)
    inside = trace.set_span_in_context(batch)
    call = _rec.start(
        f"{engine} infer",
        inside,
        internal,
        {"inferline.engine": engine, "inferline.model": model},
    )
    token = _otel.context.attach(trace.set_span_in_context(call, inside))
    try:
        yield
    finally:
        _otel.context.detach(token)
        call.end()
        batch.end()


def current_context() -> Any:
    """The current span's context when tracing is on and a span is current, else None."""
    if _rec is None:
        return None
    ctx = _otel.trace.get_current_span().get_span_context()
    return ctx if ctx.is_valid else None


def hex_ids(ctx: Any) -> tuple[str, str]:
    """(trace_id, span_id) of a span context in hex, as log records carry them."""
    return f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}"


def current_ids() -> tuple[str, str] | None:
    """(trace_id, span_id) in hex of the current span, for log records."""
    ctx = current_context()
    return None if ctx is None else hex_ids(ctx)
