"""Lean recording spans for the request path, made from the SDK provider's own parts.

Imported only when tracing is on (it imports the OpenTelemetry SDK). The SDK's span guards
every attribute with a lock and validates it, and starting and ending one cost about 17 us
on an idle core, several times that beside the busy model threads. A request's spans carry
a few attributes of plain types, set from the event loop; these spans record them in a
plain dict and are their own ``ReadableSpan``, ended straight into the provider's
processors. Sampling, ids, resource and processors are the provider's own, so exporters,
``OTEL_TRACES_SAMPLER`` and ``OTEL_BSP_*`` behave as they do with SDK spans.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import Event, ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased
from opentelemetry.trace import Link, Span, SpanContext, SpanKind, Status, StatusCode, TraceFlags

_UNSET = Status(StatusCode.UNSET)
# Newer APIs flag trace ids that are random (W3C trace context level 2); older ones lack it.
_RANDOM_FLAG = int(getattr(TraceFlags, "RANDOM_TRACE_ID", 0))
_DEFAULT_SAMPLER: str = ParentBased(ALWAYS_ON).get_description()  # type: ignore[no-untyped-call]


@dataclass(frozen=True, slots=True)
class Recorder:
    """What the SDK's tracer holds, taken once from the provider."""

    sampler: Any
    ids: Any  # the id generator
    resource: Any
    processor: Any  # the provider's span processors, as one
    scope: Any  # the instrumentation scope
    sampler_is_default: bool  # the SDK's default, ParentBased(ALWAYS_ON)

    @classmethod
    def of(cls, provider: TracerProvider, name: str) -> Recorder:
        tracer: Any = provider.get_tracer(name)
        # The SDK offers no public handle on the scope; the attribute is stable since 1.11.
        scope = tracer._instrumentation_scope
        sampler, ids, processor = tracer.sampler, tracer.id_generator, tracer.span_processor
        default = sampler.get_description() == _DEFAULT_SAMPLER
        return cls(sampler, ids, tracer.resource, processor, scope, default)

    def start(
        self,
        name: str,
        parent_context: Context | None,
        kind: SpanKind,
        attributes: Mapping[str, Any],
        links: Sequence[Link] = (),
    ) -> Span:
        """A span as ``Tracer.start_span`` makes it: the parent comes from
        ``parent_context`` (the current context when None); the sampler decides."""
        parent: SpanContext | None = trace.get_current_span(parent_context).get_span_context()
        if parent is not None and parent.is_valid:
            trace_id = parent.trace_id
            random_flag = parent.trace_flags & _RANDOM_FLAG
        else:
            parent = None
            trace_id = self.ids.generate_trace_id()
            random_flag = _RANDOM_FLAG if self.ids.is_trace_id_random() else 0
        if self.sampler_is_default:  # what it would decide, without a SamplingResult
            sampled = recording = parent is None or parent.trace_flags.sampled
            trace_state = parent.trace_state if parent is not None else None
        else:
            sampling = self.sampler.should_sample(
                parent_context, trace_id, name, kind, attributes, links
            )
            sampled, recording = sampling.decision.is_sampled(), sampling.decision.is_recording()
            trace_state, attributes = sampling.trace_state, sampling.attributes or {}
        context = SpanContext(
            trace_id,
            self.ids.generate_span_id(),
            is_remote=False,
            trace_flags=TraceFlags(int(sampled) | random_flag),
            trace_state=trace_state,
        )
        if not recording:
            return trace.NonRecordingSpan(context)
        span = LeanSpan(
            name=name,
            context=context,
            parent=parent,
            resource=self.resource,
            attributes=dict(attributes),
            links=links,
            kind=kind,
            status=_UNSET,
            start_time=time.time_ns(),
            instrumentation_scope=self.scope,
        )
        span.processor = self.processor
        self.processor.on_start(span, parent_context=parent_context)
        return span


class LeanSpan(Span, ReadableSpan):
    """A recording span that is its own ReadableSpan; it ignores changes once ended."""

    processor: Any = None
    _attributes: dict[str, Any]

    def get_span_context(self) -> SpanContext:
        return self._context  # type: ignore[return-value]

    def set_attribute(self, key: str, value: Any) -> None:
        if self._end_time is None:
            self._attributes[key] = value

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        if self._end_time is None:
            self._attributes.update(attributes)

    def add_event(self, name: str, attributes: Any = None, timestamp: int | None = None) -> None:
        if self._end_time is None:
            self._events = (*self._events, Event(name, attributes, timestamp))

    def update_name(self, name: str) -> None:
        if self._end_time is None:
            self._name = name

    def is_recording(self) -> bool:
        return self._end_time is None

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        if self._end_time is None:
            self._status = status if isinstance(status, Status) else Status(status, description)

    def record_exception(
        self,
        exception: BaseException,
        attributes: Any = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        details = {
            "exception.type": type(exception).__qualname__,
            "exception.message": str(exception),
        }
        self.add_event("exception", {**details, **(attributes or {})}, timestamp)

    def end(self, end_time: int | None = None) -> None:
        if self._end_time is None:
            self._end_time = end_time if end_time is not None else time.time_ns()
            self.processor.on_end(self)
