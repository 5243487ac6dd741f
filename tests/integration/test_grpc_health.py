"""grpc.health.v1.Health, through the gRPC project's own client stubs: what Kubernetes gRPC
probes, Envoy and grpc-health-probe ask."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2 as hpb
from grpc_health.v1 import health_pb2_grpc

from tests.conftest import Server, ServerFactory

SERVING = hpb.HealthCheckResponse.SERVING
NOT_SERVING = hpb.HealthCheckResponse.NOT_SERVING
SERVICE_UNKNOWN = hpb.HealthCheckResponse.SERVICE_UNKNOWN
KEY = "health-key-789"


def stub(server: Server) -> Iterator[health_pb2_grpc.HealthStub]:
    with grpc.insecure_channel(server.grpc_target) as channel:
        yield health_pb2_grpc.HealthStub(channel)


@pytest.fixture
def health(server: Server) -> Iterator[health_pb2_grpc.HealthStub]:
    yield from stub(server)


def check(health: health_pb2_grpc.HealthStub, name: str, **kwargs: object) -> int:
    reply = health.Check(hpb.HealthCheckRequest(service=name), timeout=10, **kwargs)
    return int(reply.status)


def wait_serving(health: health_pb2_grpc.HealthStub, **kwargs: object) -> None:
    """Until the model has loaded (the gRPC port opens before it does)."""
    deadline = time.monotonic() + 60
    while check(health, "", wait_for_ready=True, **kwargs) != SERVING:
        assert time.monotonic() < deadline, "the server did not become ready"
        time.sleep(0.1)


@pytest.mark.parametrize(
    "name", ["", "inference.GRPCInferenceService", "live", "sentiment", "embedding"]
)
def test_a_ready_server_is_serving(health: health_pb2_grpc.HealthStub, name: str) -> None:
    assert check(health, name) == SERVING


def test_an_unknown_service_is_not_found(health: health_pb2_grpc.HealthStub) -> None:
    with pytest.raises(grpc.RpcError) as err:
        check(health, "sentiment-v2")
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert "'sentiment'" in str(err.value.details())


def test_watch_sends_the_status_first(health: health_pb2_grpc.HealthStub) -> None:
    for name, first in (("", SERVING), ("nope", SERVICE_UNKNOWN)):
        stream = health.Watch(hpb.HealthCheckRequest(service=name), timeout=10)
        assert next(stream).status == first
        stream.cancel()


def test_an_undecodable_request_is_invalid_argument(server: Server) -> None:
    with grpc.insecure_channel(server.grpc_target) as channel:
        for method, call in (
            ("Check", channel.unary_unary),
            ("Watch", channel.unary_stream),
        ):
            rpc = call(f"/grpc.health.v1.Health/{method}", bytes, bytes)  # raw bytes out and in
            with pytest.raises(grpc.RpcError) as err:
                reply = rpc(b"\xff\xff\xff", timeout=10)
                list(reply) if method == "Watch" else reply
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, method


def test_a_server_that_failed_to_load_is_live_but_not_serving(failed_server: Server) -> None:
    for health in stub(failed_server):
        assert check(health, "live") == SERVING
        assert check(health, "") == NOT_SERVING
        assert check(health, "sentiment") == NOT_SERVING  # its models are not known yet


def test_health_follows_the_open_paths_when_keys_are_on(server_factory: ServerFactory) -> None:
    opened = server_factory({"INFERLINE_API_KEYS": KEY})
    for health in stub(opened):
        assert check(health, "") == SERVING  # /health is open by default
    closed = server_factory(
        {"INFERLINE_API_KEYS": KEY, "INFERLINE_AUTH_OPEN_PATHS": "/health/live"}, wait_ready=False
    )
    keyed = {"metadata": [("authorization", f"Bearer {KEY}")]}
    for health in stub(closed):
        wait_serving(health, **keyed)
        with pytest.raises(grpc.RpcError) as err:
            check(health, "")
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as err:
            next(health.Watch(hpb.HealthCheckRequest(service=""), timeout=10))
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert check(health, "", **keyed) == SERVING
        stream = health.Watch(hpb.HealthCheckRequest(service=""), timeout=10, **keyed)
        assert next(stream).status == SERVING
        stream.cancel()


def test_on_sigterm_watchers_see_not_serving_and_the_stream_ends(
    server_factory: ServerFactory,
) -> None:
    server = server_factory({"INFERLINE_SHUTDOWN_GRACE_S": "60"})
    for health in stub(server):
        stream = health.Watch(hpb.HealthCheckRequest(service=""), timeout=30)
        assert next(stream).status == SERVING
        server.proc.send_signal(signal.SIGTERM)
        assert [reply.status for reply in stream] == [NOT_SERVING]  # then the stream ends
    # A watcher does not hold the shutdown for the 60 s grace period.
    assert server.stop(timeout=20) == 0
