"""OipEngine end to end: a gateway inferline serves ``sentiment`` locally and ``embedding``
through OipEngine from a backend inferline, a real second process, over HTTP and gRPC.
Results equal the backend's own; the gateway's readiness follows the backend down and up;
retries and pass-through of refusals go through a real proxy written here."""

from __future__ import annotations

import collections
import re
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton
import uvicorn
from grpc_health.v1 import health_pb2, health_pb2_grpc

from inferline.api.http import Receive, Scope, Send
from tests.conftest import Server, ServerFactory, free_port
from tests.integration.fake_openai import abandoned_while_slow

pytestmark = pytest.mark.integration

TEXTS = [
    "Broke after a week.",
    "It comes in a box.",
    "The battery lasts all day and the screen is gorgeous, but the speakers are tinny.",
    "ok",
    "I would not buy this again; support never answered my three emails about the refund.",
]


def models_config(tmp: Path, url: str, protocol: str, extra: str = "") -> Path:
    path = tmp / f"models-{protocol}-{free_port()}.toml"
    path.write_text(
        f"""
[models.sentiment]
engine = "onnx"

[models.embedding]
engine = "oip"
url = "{url}"
protocol = "{protocol}"
remote_model = "embedding"
health_interval_s = 0.2
{extra}
"""
    )
    return path


def upstream_url(backend: Server, protocol: str) -> str:
    return backend.url if protocol == "http" else backend.grpc_target


# int8 quantisation scales activations per batch, so its results depend on which texts
# share a batch; fp32's do not (to rounding), so the gateway's and the backend's batches
# may differ and the results must still agree.
FP32 = {"INFERLINE_PRECISION": "fp32"}


@pytest.fixture(scope="module")
def backend(server_factory: ServerFactory) -> Server:
    return server_factory(FP32)


# "httpx" is OIP REST through httpx (``http2 = true``; the backend speaks HTTP/1.1, which
# httpx falls back to), "http" through engines/http1.py.
@pytest.fixture(scope="module", params=["http", "httpx", "grpc"])
def gateway(
    request: pytest.FixtureRequest,
    backend: Server,
    server_factory: ServerFactory,
    tmp_path_factory: pytest.TempPathFactory,
) -> Server:
    protocol = str(request.param)
    tmp = tmp_path_factory.mktemp(f"gateway-{protocol}")
    if protocol == "httpx":
        config = models_config(tmp, backend.url, "http", "http2 = true")
    else:
        config = models_config(tmp, upstream_url(backend, protocol), protocol)
    return server_factory({"INFERLINE_MODELS_CONFIG": str(config), **FP32})


def post(server: Server, path: str, body: Any) -> httpx.Response:
    return httpx.post(server.url + path, json=body, timeout=30)


def test_results_equal_the_backends(gateway: Server, backend: Server) -> None:
    through = post(gateway, "/embed", {"texts": TEXTS})
    direct = post(backend, "/embed", {"texts": TEXTS})
    assert through.status_code == 200, through.text
    np.testing.assert_allclose(through.json()["embeddings"], direct.json()["embeddings"], atol=1e-5)
    assert through.json()["truncated"] == direct.json()["truncated"]
    oip = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [len(TEXTS)], "data": TEXTS}]}
    tensor = post(gateway, "/v2/models/embedding/infer", oip).json()["outputs"][0]
    assert tensor["shape"] == [len(TEXTS), 384]
    np.testing.assert_allclose(
        np.reshape(tensor["data"], (len(TEXTS), 384)), direct.json()["embeddings"], atol=1e-5
    )
    local = post(gateway, "/predict", {"texts": TEXTS}).json()["results"]  # local on both
    expected = post(backend, "/predict", {"texts": TEXTS}).json()["results"]
    assert [r["label"] for r in local] == [r["label"] for r in expected]
    np.testing.assert_allclose(
        [list(r["probabilities"].values()) for r in local],
        [list(r["probabilities"].values()) for r in expected],
        atol=1e-5,
    )


def test_each_model_runs_on_its_engine(gateway: Server) -> None:
    post(gateway, "/embed", {"texts": ["one"]}).raise_for_status()
    post(gateway, "/predict", {"text": "one"}).raise_for_status()
    metrics = httpx.get(gateway.url + "/metrics").text
    assert 'engine="oip",model="embedding"' in metrics
    assert 'engine="onnx",model="sentiment"' in metrics
    assert 'engine="onnx",model="embedding"' not in metrics


def wait_for(server: Server, status: int, timeout: float = 20) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while True:
        response = httpx.get(server.url + "/health/ready", timeout=5)
        if response.status_code == status or time.monotonic() > deadline:
            return response
        time.sleep(0.1)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_readiness_follows_the_backend(
    protocol: str, server_factory: ServerFactory, tmp_path: Path
) -> None:
    ports = {"INFERLINE_PORT": str(free_port()), "INFERLINE_GRPC_PORT": str(free_port())}
    backend = server_factory(ports)
    config = models_config(tmp_path, upstream_url(backend, protocol), protocol)
    gateway = server_factory({"INFERLINE_MODELS_CONFIG": str(config)})
    assert post(gateway, "/embed", {"texts": ["before"]}).status_code == 200

    assert backend.stop(signal.SIGKILL) != 0
    down = wait_for(gateway, 503)
    assert down.status_code == 503
    assert down.json() == {
        "status": "upstream_down",
        "error": "the upstream of model 'embedding' is unavailable",
    }
    refused = post(gateway, "/embed", {"texts": ["while down"]})
    assert refused.status_code == 503 and "unavailable" in refused.json()["error"]
    assert post(gateway, "/predict", {"text": "local still works"}).status_code == 200
    assert models_ready(gateway) == {"sentiment": True, "embedding": False}  # each its own

    server_factory(ports)  # the backend again, at the same address
    assert wait_for(gateway, 200).status_code == 200
    assert post(gateway, "/embed", {"texts": ["after"]}).status_code == 200
    assert models_ready(gateway) == {"sentiment": True, "embedding": True}


def models_ready(gateway: Server) -> dict[str, bool]:
    """Each model's readiness, checked the same on OIP REST, OIP gRPC and gRPC health."""
    found = {}
    client = triton.InferenceServerClient(gateway.grpc_target)
    channel = grpc.insecure_channel(gateway.grpc_target)
    health = health_pb2_grpc.HealthStub(channel)
    try:
        for name in ("sentiment", "embedding"):
            rest = httpx.get(f"{gateway.url}/v2/models/{name}/ready", timeout=10)
            if rest.status_code == 503:  # names this model's upstream, no other
                assert rest.json()["error"] == f"the upstream of model {name!r} is unavailable"
            check = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=10)
            serving = check.status == health_pb2.HealthCheckResponse.SERVING
            assert rest.status_code in (200, 503)
            assert client.is_model_ready(name) == serving == (rest.status_code == 200), name
            found[name] = serving
    finally:
        client.close()
        channel.close()
    return found


class FlakyProxy:
    """A real OIP front for the backend that refuses chosen requests first: the first text
    of a batch names the refusal, e.g. ``503-once`` or ``429-always-100``."""

    def __init__(self, backend: Server) -> None:
        self.backend = backend.url
        self.attempts: collections.Counter[str] = collections.Counter()
        self.headers: list[dict[str, str]] = []
        self.ids: collections.defaultdict[str, list[str]] = collections.defaultdict(list)
        self.url = ""  # where it listens
        self.abandoned: collections.Counter[str] = collections.Counter()  # left before answer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.headers.append({k.decode(): v.decode() for k, v in scope["headers"]})
        if scope["path"].endswith("/infer"):
            request = httpx.Response(200, content=body).json()
            first = request["inputs"][0]["data"][0]
            self.attempts[first] += 1
            self.ids[first].append(request.get("id"))
            if await abandoned_while_slow(first, receive):
                self.abandoned[first] += 1
                return
            refusal = self.refusal(first)
            if refusal is not None:
                status, retry_after = refusal
                headers = [(b"content-type", b"application/json")]
                if retry_after is not None:
                    headers.append((b"retry-after", retry_after.encode()))
                await send({"type": "http.response.start", "status": status, "headers": headers})
                await send({"type": "http.response.body", "body": b'{"error": "refused"}'})
                return
        async with httpx.AsyncClient(base_url=self.backend, timeout=30) as client:
            forwarded = await client.request(
                scope["method"],
                scope["path"],
                content=body,
                headers={"content-type": "application/json"},
            )
        headers = [
            (k.encode(), v.encode())
            for k, v in forwarded.headers.items()
            if k in ("content-type", "inference-header-content-length")
        ]
        status = forwarded.status_code
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": forwarded.content})

    def refusal(self, first: str) -> tuple[int, str | None] | None:
        parts = first.split("-")
        if len(parts) < 2 or not parts[0].isdigit():
            return None
        if parts[1] == "once" and self.attempts[first] > 1:
            return None
        return int(parts[0]), parts[2] if len(parts) > 2 else None


@pytest.fixture(scope="module")
def proxy(backend: Server) -> Iterator[FlakyProxy]:
    app = FlakyProxy(backend)
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    app.url = f"http://127.0.0.1:{port}"
    yield app
    server.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def retrying_gateway(
    proxy: FlakyProxy, server_factory: ServerFactory, tmp_path_factory: pytest.TempPathFactory
) -> Server:
    tmp = tmp_path_factory.mktemp("retrying-gateway")
    extra = "max_retries = 2\nbackoff_s = 0.01\ntimeout_s = 5\nheaders = {x-route = 'embed'}"
    config = models_config(tmp, proxy.url, "http", extra)
    env = {"INFERLINE_MODELS_CONFIG": str(config), "OTEL_TRACES_EXPORTER": "console"}
    return server_factory(env)


def test_unavailable_is_retried(retrying_gateway: Server, proxy: FlakyProxy) -> None:
    response = post(retrying_gateway, "/embed", {"texts": ["503-once-0"]})
    assert response.status_code == 200, response.text
    assert proxy.attempts["503-once-0"] == 2
    response = post(retrying_gateway, "/embed", {"texts": ["503-always-0"]})
    assert response.status_code == 503
    assert proxy.attempts["503-always-0"] == 3  # max_retries 2
    # The upstream is named by its model: a client learns no internal address.
    assert response.json()["error"].startswith("the upstream of model 'embedding' answered 503")
    assert proxy.url.split("//")[1] not in response.text


def test_each_batch_carries_an_id_upstream_and_its_retries_keep_it(
    retrying_gateway: Server, proxy: FlakyProxy
) -> None:
    for texts in (["503-once-id"], ["plain-id"]):
        assert post(retrying_gateway, "/embed", {"texts": texts}).status_code == 200
    retried, plain = proxy.ids["503-once-id"], proxy.ids["plain-id"]
    assert len(retried) == 2 and retried[0] == retried[1]
    assert re.fullmatch(r"embedding-[0-9a-f]{8}-\d+", retried[0]), retried
    assert len(plain) == 1 and plain[0] != retried[0]


def test_retry_after_is_honoured_within_the_deadline(
    retrying_gateway: Server, proxy: FlakyProxy
) -> None:
    started = time.monotonic()
    response = post(retrying_gateway, "/embed", {"texts": ["429-once-1"]})
    assert response.status_code == 200
    assert time.monotonic() - started >= 1.0  # it waited as asked
    assert proxy.attempts["429-once-1"] == 2
    started = time.monotonic()
    response = post(retrying_gateway, "/embed", {"texts": ["429-always-100"]})
    assert response.status_code == 429 and response.headers["retry-after"] == "100"
    assert proxy.attempts["429-always-100"] == 1  # 100 s is past the 5 s timeout
    assert time.monotonic() - started < 3


def test_failures_are_not_retried(retrying_gateway: Server, proxy: FlakyProxy) -> None:
    response = post(retrying_gateway, "/embed", {"texts": ["500-always"]})
    assert response.status_code == 500 and "inference failed (id " in response.json()["error"]
    assert proxy.attempts["500-always"] == 1


def embed_within(server: Server, text: str, seconds: str) -> httpx.Response:
    """POST /embed with X-Request-Timeout: the caller's own deadline."""
    headers = {"x-request-timeout": seconds}
    return httpx.post(server.url + "/embed", json={"texts": [text]}, headers=headers, timeout=30)


def test_a_callers_deadline_ends_the_upstream_call_and_spares_the_breaker(
    retrying_gateway: Server, proxy: FlakyProxy
) -> None:
    # The upstream takes 3 s, within the engine's timeout_s (5 s); the callers wait 0.3 s.
    for _ in range(4):  # more than failure_threshold (3) in a row
        response = embed_within(retrying_gateway, "slow-3", "0.3")
        assert response.status_code == 504, response.text
        assert "deadline" in response.json()["error"]
    assert proxy.attempts["slow-3"] == 4  # each sent once: a timeout is not retried
    # The gateway hung up at the deadline, instead of waiting for the upstream's answer.
    deadline = time.monotonic() + 10
    while proxy.abandoned["slow-3"] < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proxy.abandoned["slow-3"] == 4
    # The callers' own deadlines say nothing of the upstream: the breaker stayed closed.
    assert httpx.get(retrying_gateway.url + "/v2/models/embedding/ready").status_code == 200
    assert post(retrying_gateway, "/embed", {"texts": ["slow-0.1"]}).status_code == 200


def test_a_hung_upstream_opens_the_breaker_at_deadlines_near_timeout_s(
    proxy: FlakyProxy, server_factory: ServerFactory, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """As with the defaults (both 30 s), the callers' deadline here is as long as the
    engine's timeout_s: timing out at it says the upstream hangs, and counts."""
    tmp = tmp_path_factory.mktemp("hung")
    config = models_config(tmp, proxy.url, "http", "timeout_s = 0.5\nfailure_threshold = 2")
    gateway = server_factory({"INFERLINE_MODELS_CONFIG": str(config)})
    for _ in range(2):
        response = embed_within(gateway, "slow-3-hung", "0.5")
        assert response.status_code == 504, response.text
    # The breaker hears of the second timeout as the engine's call ends, which may be a
    # moment after the caller's own timer answered it.
    deadline = time.monotonic() + 10
    while "is down" not in gateway.output() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "upstream of embedding at" in gateway.output()
    assert "is down" in gateway.output()


def test_headers_and_trace_context_go_upstream(retrying_gateway: Server, proxy: FlakyProxy) -> None:
    proxy.headers.clear()
    post(retrying_gateway, "/embed", {"texts": ["traced"]}).raise_for_status()
    (headers,) = [h for h in proxy.headers if "traceparent" in h]
    assert headers["x-route"] == "embed"
    assert headers["traceparent"].startswith("00-")
