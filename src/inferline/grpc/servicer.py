"""GRPCInferenceService: the same models, checks and batcher as the REST protocol.

A request whose inputs came as ``raw_input_contents`` gets ``raw_output_contents`` back (what
Triton's client expects); one with typed ``contents`` gets typed contents.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable
from typing import Any, TypeVar, cast

import grpc

from inferline.api import tensors
from inferline.api.tensors import BadTensor, Signature
from inferline.errors import (
    DeadlineExceeded,
    InferlineError,
    InvalidInput,
    NotFound,
    Overloaded,
    Unauthorized,
    Unavailable,
    reason_of,
)
from inferline.grpc import open_inference_grpc_pb2 as pb
from inferline.grpc.auth import identify
from inferline.grpc.decode import UNDECODABLE
from inferline.service import Service
from inferline.telemetry import context as request_context
from inferline.telemetry import logs, tracing
from inferline.telemetry.context import RequestRecord
from inferline.telemetry.metrics import Metrics

log = logging.getLogger(__name__)

T = TypeVar("T")
SERVICE = "inference.GRPCInferenceService"
Context = grpc.aio.ServicerContext[Any, Any]


CODES: tuple[tuple[type[InferlineError], grpc.StatusCode], ...] = (
    (Unauthorized, grpc.StatusCode.UNAUTHENTICATED),
    (InvalidInput, grpc.StatusCode.INVALID_ARGUMENT),
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (Overloaded, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (Unavailable, grpc.StatusCode.UNAVAILABLE),
    (DeadlineExceeded, grpc.StatusCode.DEADLINE_EXCEEDED),
)


def code_of(exc: InferlineError) -> grpc.StatusCode:
    for kind, code in CODES:
        if isinstance(exc, kind):
            return code
    return grpc.StatusCode.INTERNAL


class InferenceServicer:
    """The methods of ``inference.GRPCInferenceService``; names follow the proto."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.settings = service.settings
        self.keys = service.keys  # HTTP's set

    async def ServerLive(
        self, request: pb.ServerLiveRequest, context: Context
    ) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(
        self, request: pb.ServerReadyRequest, context: Context
    ) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.service.ready)

    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: Context
    ) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(**tensors.server_metadata())

    async def ModelReady(
        self, request: pb.ModelReadyRequest, context: Context
    ) -> pb.ModelReadyResponse:
        return await _guard(context, self._model_ready(request.name, request.version))

    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: Context
    ) -> pb.ModelMetadataResponse:
        sig = await _guard(context, self._signature(request.name, request.version))
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=sig.name,
            versions=[tensors.MODEL_VERSION],
            platform=tensors.PLATFORM,
            inputs=[tensor(name=t.name, datatype=t.datatype, shape=t.shape) for t in sig.inputs],
            outputs=[tensor(name=t.name, datatype=t.datatype, shape=t.shape) for t in sig.outputs],
        )

    async def ModelInfer(
        self, request: pb.ModelInferRequest, context: Context
    ) -> pb.ModelInferResponse:
        """Counted, logged and traced like the HTTP API routes (protocol ``oip_grpc``)."""
        record = RequestRecord("oip_grpc", status="CANCELLED")  # unless it gets further
        token = request_context.enter(record)
        metrics = self.service.metrics
        metrics.inflight.inc()
        try:
            carrier = {
                key: value
                for key, value in context.invocation_metadata() or ()
                if key in tracing.TRACE_FIELDS and isinstance(value, str)
            }
            attributes = {"rpc.system": "grpc", "rpc.service": SERVICE, "rpc.method": "ModelInfer"}
            with tracing.server_span(f"{SERVICE}/ModelInfer", carrier, attributes) as span:
                record.span = span
                try:
                    call = self._keyed_infer(request, context)
                    return await _guard(context, call, record, metrics)
                finally:
                    metrics.inflight.dec()
                    duration = time.perf_counter() - record.started
                    metrics.record_request(record, duration)
                    if self.settings.access_log:  # in the span: the line has its trace id
                        logs.access(record, duration, {"method": "ModelInfer"})
                    if span is not None:
                        _close_span(span, record)
        finally:
            request_context.leave(token)

    async def _keyed_infer(
        self, request: pb.ModelInferRequest, context: Context
    ) -> pb.ModelInferResponse:
        """With API keys on, the key check and the per-key limit, then the call."""
        keys = self.keys
        if not keys.enabled:
            return await self._infer(request, context)
        key = identify(keys, context.invocation_metadata())
        with keys.slot(key):
            return await self._infer(request, context)

    async def _signature(self, name: str, version: str) -> Signature:
        return tensors.signature(self.service, name, version)

    async def _model_ready(self, name: str, version: str) -> pb.ModelReadyResponse:
        try:
            tensors.signature(self.service, name, version)
        except Unavailable:  # loading, failed or draining: an answer, not an error
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=self.service.model_ready(name))

    async def _infer(
        self, request: pb.ModelInferRequest, context: Context
    ) -> pb.ModelInferResponse:
        if cast(object, request) is UNDECODABLE:  # after the key check (grpc/decode.py)
            raise InvalidInput("the request message does not parse")
        sig = tensors.signature(self.service, request.model_name, request.model_version)
        tensors.check_names(sig, [t.name for t in request.inputs])
        (tensor,) = request.inputs
        tensors.check_parameters(tensor.parameters)
        count = tensors.check_header(tensor.datatype, list(tensor.shape))
        raw = bool(request.raw_input_contents)
        values: Any
        if raw:
            if len(request.raw_input_contents) != 1 or tensor.HasField("contents"):
                raise BadTensor(
                    "raw_input_contents needs one entry per input and no typed contents"
                )
            values = tensors.deserialize_bytes(request.raw_input_contents[0])
        else:
            typed = [field.name for field, _ in tensor.contents.ListFields()]
            if any(name != "bytes_contents" for name in typed):
                raise BadTensor(f"input {tensors.INPUT!r} is BYTES: send bytes_contents")
            values = tensor.contents.bytes_contents
        texts = tensors.texts_of(values, count, self.settings)
        requested = []
        for output in request.outputs:
            tensors.check_parameters(output.parameters)
            if "classification" in output.parameters:
                raise BadTensor("the classification extension is not supported")
            requested.append(output.name)
        names = tensors.check_outputs(sig, requested)
        deadline = self._deadline(context, _parameters(request.parameters))
        _, _, rows = await self.service.infer(sig.name, texts, deadline)
        response = pb.ModelInferResponse(
            model_name=sig.name, model_version=tensors.MODEL_VERSION, id=request.id
        )
        for result in tensors.outputs(sig, rows, names):
            out = response.outputs.add(name=result.name, datatype=result.datatype)
            out.shape.extend(result.shape)
            for key, value in result.parameters.items():
                out.parameters[key].string_param = value
            if raw:
                response.raw_output_contents.append(tensors.raw_bytes(result))
            elif isinstance(result.data, list):
                out.contents.bytes_contents.extend(s.encode("utf-8") for s in result.data)
            else:
                out.contents.fp32_contents.extend(result.data.tolist())
        return response

    def _deadline(self, context: Context, parameters: dict[str, Any]) -> float:
        """The gRPC deadline or Triton's ``timeout`` parameter, whichever is sooner."""
        limit = self.settings.request_timeout_s
        given = [
            s
            for s in (context.time_remaining(), tensors.timeout_parameter(parameters))
            if s is not None
        ]
        seconds = min(*given, limit * 10) if given else limit  # the cap of the REST path too
        return time.monotonic() + max(0.0, seconds)


async def _guard(
    context: Context,
    call: Awaitable[T],
    record: RequestRecord | None = None,
    metrics: Metrics | None = None,
) -> T:
    """Runs a call, ending the RPC with the status code of any error it raises; fills in
    the record's status and counts refusals when given them."""
    try:
        result = await call
    except InferlineError as exc:
        code = code_of(exc)
        if record is not None:
            record.status = code.name
        if metrics is not None and code is not grpc.StatusCode.INTERNAL:
            metrics.reject(reason_of(exc))
        if code is grpc.StatusCode.INTERNAL:
            error_id = uuid.uuid4().hex
            log.error("engine error %s: %s", error_id, exc, exc_info=exc)
            await context.abort(code, f"inference failed (id {error_id})")
        if _gone(context):  # an answer would fail in grpc, which logs it as an error
            raise asyncio.CancelledError from None
        await context.abort(code, str(exc))
    if record is not None:
        record.status = "OK"
    if _gone(context):
        raise asyncio.CancelledError
    return result


def _gone(context: Context) -> bool:
    """The client cancelled, or its deadline passed: grpc can send it nothing more. A
    CancelledError ends the call quietly (grpc logs it at debug level)."""
    if context.cancelled():
        return True
    left = context.time_remaining()
    return left is not None and left <= 0


# The codes that mark a server span as an error (OpenTelemetry's gRPC conventions); the
# others are the client's doing, as HTTP's 4xx are.
SERVER_ERRORS = {"UNKNOWN", "DEADLINE_EXCEEDED", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE"}


def _close_span(span: Any, record: RequestRecord) -> None:
    code = grpc.StatusCode[record.status]
    span.set_attributes(
        {
            "rpc.grpc.status_code": code.value[0],  # the number, as the conventions say
            "inferline.model": record.model,
            "inferline.queue_wait_seconds": record.queue_wait,
        }
    )
    if record.status in SERVER_ERRORS:
        from opentelemetry.trace import Status, StatusCode

        span.set_status(Status(StatusCode.ERROR, record.status))


def _parameters(parameters: Any) -> dict[str, Any]:
    """InferParameter values as plain Python values."""
    values = {}
    for key, parameter in parameters.items():
        choice = parameter.WhichOneof("parameter_choice")
        values[key] = getattr(parameter, choice) if choice else None
    return values
