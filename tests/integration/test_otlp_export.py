"""Tracing configured only by ``OTEL_*`` variables, exported over OTLP/HTTP from a real server
and a real worker to a collector written here: one trace crosses both processes and Redis."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from tests.conftest import RedisServer, ServerFactory, WorkerFactory, free_port

pytestmark = pytest.mark.integration

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT = f"00-{TRACE_ID}-b7ad6b7169203331-01"


class Collector:
    """An OTLP/HTTP trace receiver: keeps (service name, span name, trace id, parent id)."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, str, str, str]] = []
        self.raw: list[Span] = []  # every span as exported
        self.lock = threading.Lock()
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                request = ExportTraceServiceRequest.FromString(body)
                with collector.lock:
                    for resource_spans in request.resource_spans:
                        service = next(
                            a.value.string_value
                            for a in resource_spans.resource.attributes
                            if a.key == "service.name"
                        )
                        for scope in resource_spans.scope_spans:
                            collector.raw.extend(scope.spans)
                            for span in scope.spans:
                                collector.spans.append(
                                    (
                                        service,
                                        span.name,
                                        span.trace_id.hex(),
                                        span.parent_span_id.hex(),
                                    )
                                )
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, wanted: set[tuple[str, str]], timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if wanted <= self.in_trace():
                return
            time.sleep(0.1)
        raise AssertionError(f"missing spans {wanted - self.in_trace()}; got {self.spans}")

    def in_trace(self) -> set[tuple[str, str]]:
        with self.lock:
            return {(svc, name) for svc, name, trace, _ in self.spans if trace == TRACE_ID}


@pytest.fixture
def collector() -> Iterator[Collector]:
    c = Collector()
    yield c
    c.server.shutdown()
    c.server.server_close()


def otel_env(collector: Collector, service: str) -> dict[str, str]:
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector.url,
        "OTEL_SERVICE_NAME": service,
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }


def test_a_job_is_one_trace_across_server_redis_and_worker(
    collector: Collector,
    server_factory: ServerFactory,
    worker_factory: WorkerFactory,
    redis_server: RedisServer,
) -> None:
    queue = {
        "INFERLINE_REDIS_URL": redis_server.url,
        "INFERLINE_QUEUE_PREFIX": f"otlp{free_port()}",
    }
    server = server_factory({**queue, **otel_env(collector, "api")})
    worker_factory({**queue, **otel_env(collector, "worker")})
    headers = {"traceparent": PARENT}
    with httpx.Client(base_url=server.url, timeout=30) as client:
        assert client.post("/predict", json={"text": "nice"}, headers=headers).status_code == 200
        job = {"model": "sentiment", "inputs": ["solid build"]}
        assert client.post("/v1/jobs", json=job, headers=headers).status_code == 202
    collector.wait_for(
        {
            ("api", "POST /predict"),
            ("api", "batch sentiment"),
            ("api", "onnx infer"),
            ("api", "POST /v1/jobs"),
            ("worker", f"process {queue['INFERLINE_QUEUE_PREFIX']}:jobs"),
            ("worker", "batch sentiment"),
            ("worker", "onnx infer"),
        }
    )
    # The caller's span is the parent of both server spans.
    parents = {
        name: parent
        for svc, name, trace, parent in collector.spans
        if trace == TRACE_ID and name.startswith("POST")
    }
    assert set(parents.values()) == {"b7ad6b7169203331"}


def test_grpc_calls_continue_the_callers_trace_and_mark_server_errors(
    collector: Collector, server_factory: ServerFactory
) -> None:
    """A gRPC call under the caller's traceparent, and one whose deadline passed in the queue:
    the second's span is an error, and both carry the numeric status code."""
    import grpc
    from tritonclient.grpc import service_pb2 as pb
    from tritonclient.grpc import service_pb2_grpc

    server = server_factory(otel_env(collector, "api"))
    text = pb.ModelInferRequest.InferInputTensor(name="text", datatype="BYTES", shape=[1])
    text.contents.bytes_contents.append(b"great value")
    late = pb.ModelInferRequest(model_name="sentiment", inputs=[text])
    late.parameters["timeout"].int64_param = 1  # one microsecond: it passes in the queue
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        ok = pb.ModelInferRequest(model_name="sentiment", inputs=[text])
        stub.ModelInfer(ok, metadata=[("traceparent", PARENT)], timeout=30)
        with pytest.raises(grpc.RpcError) as refused:
            stub.ModelInfer(late, timeout=30)
        assert refused.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    name = "inference.GRPCInferenceService/ModelInfer"
    deadline = time.monotonic() + 20
    while sum(span.name == name for span in collector.raw) < 2:
        assert time.monotonic() < deadline, collector.spans
        time.sleep(0.1)
    served, expired = (span for span in collector.raw if span.name == name)
    codes = [
        {a.key: a.value.int_value for a in span.attributes}["rpc.grpc.status_code"]
        for span in (served, expired)
    ]
    assert codes == [0, 4]  # OK, DEADLINE_EXCEEDED
    assert served.trace_id.hex() == TRACE_ID
    assert served.status.code == Status.STATUS_CODE_UNSET
    assert expired.status.code == Status.STATUS_CODE_ERROR
