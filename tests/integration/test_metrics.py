"""``/metrics`` of a real server (and a real worker) after known traffic, parsed with
prometheus-client's own parser: names, labels and counts must match what was sent."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.utils import InferenceServerException

from inferline.service import WARMUP_TEXTS
from inferline.telemetry import gpu
from tests.conftest import RedisServer, Server, ServerFactory, WorkerFactory, free_port

pytestmark = pytest.mark.integration

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str) -> Samples:
    text = httpx.get(url, timeout=10).text
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def names(samples: Samples) -> set[str]:
    return {name for name, _ in samples}


@pytest.fixture(scope="module")
def fresh(server_factory: ServerFactory) -> Server:
    """A server of its own, so that the counts are exactly this module's traffic."""
    return server_factory()


def triton_input(texts: list[str]) -> triton.InferInput:
    tensor = triton.InferInput("text", [len(texts)], "BYTES")
    tensor.set_data_from_numpy(np.array([t.encode() for t in texts], dtype=np.object_))
    return tensor


@pytest.fixture(scope="module")
def traffic(fresh: Server) -> Iterator[Samples]:
    with httpx.Client(base_url=fresh.url, timeout=30) as client:
        for text in ["great", "bad", "fine", "loved it", "meh"]:
            assert client.post("/predict", json={"text": text}).status_code == 200
        assert client.post("/predict", json={"texts": ["a", "b", "c"]}).status_code == 200
        assert client.post("/predict", json={"text": ""}).status_code == 422
        assert client.post("/predict", json={"nope": 1}).status_code == 422
        assert client.post("/predict", content=b"{not json").status_code == 400
        for _ in range(2):
            body = {"input": "x", "model": "all-MiniLM-L6-v2"}
            assert client.post("/v1/embeddings", json=body).status_code == 200
        oip = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [2], "data": ["a", "b"]}]}
        assert client.post("/v2/models/sentiment/infer", json=oip).status_code == 200
        assert client.get("/health/ready").status_code == 200  # probes are not counted
    grpc_client = triton.InferenceServerClient(fresh.grpc_target)
    try:
        grpc_client.infer("sentiment", [triton_input(["good", "poor"])])
        with pytest.raises(InferenceServerException):
            grpc_client.infer("nope", [triton_input(["x"])])
    finally:
        grpc_client.close()
    yield scrape(fresh.url + "/metrics")


@pytest.mark.parametrize(
    ("protocol", "model", "status", "count"),
    [
        ("rest", "sentiment", "200", 6),
        ("rest", "none", "422", 2),
        ("rest", "none", "400", 1),
        ("openai", "embedding", "200", 2),
        ("oip_rest", "sentiment", "200", 1),
        ("oip_grpc", "sentiment", "OK", 1),
        ("oip_grpc", "none", "NOT_FOUND", 1),
    ],
)
def test_requests_are_counted_by_protocol_model_and_status(
    traffic: Samples, protocol: str, model: str, status: str, count: int
) -> None:
    labels = {"protocol": protocol, "model": model, "status": status}
    assert value(traffic, "inferline_requests_total", **labels) == count
    assert value(traffic, "inferline_request_duration_seconds_count", **labels) == count
    assert value(traffic, "inferline_request_duration_seconds_bucket", le="+Inf", **labels) == (
        count
    )


def test_only_the_traffic_sent_is_counted(traffic: Samples) -> None:
    total = sum(v for (name, _), v in traffic.items() if name == "inferline_requests_total")
    assert total == 6 + 2 + 1 + 2 + 1 + 1 + 1


def test_refusals_are_counted_by_reason(traffic: Samples) -> None:
    assert value(traffic, "inferline_rejected_total", reason="invalid") == 3
    assert value(traffic, "inferline_rejected_total", reason="not_found") == 1


def test_batches_texts_and_tokens_add_up(traffic: Samples) -> None:
    warm_up = len(WARMUP_TEXTS)  # every model runs the warm-up texts once
    texts = {"sentiment": 5 + 3 + 2 + 2, "embedding": 2}
    for model, sent in texts.items():
        assert value(traffic, "inferline_batch_size_sum", model=model) == sent + warm_up
        assert value(traffic, "inferline_queue_wait_seconds_count", model=model) == sent + warm_up
        real = value(traffic, "inferline_tokens_total", model=model, direction="input")
        padded = value(traffic, "inferline_batch_tokens_sum", model=model)
        padding = value(traffic, "inferline_padding_tokens_total", model=model)
        assert padded == real + padding and real > 0
        batches = value(traffic, "inferline_batch_size_count", model=model)
        engine = {"model": model, "engine": "onnx"}
        assert value(traffic, "inferline_inference_duration_seconds_count", **engine) == batches
    # One observation per request that reached the model (warm-up is not a request).
    assert value(traffic, "inferline_input_tokens_count", model="sentiment") == 5 + 1 + 1 + 1
    assert value(traffic, "inferline_input_tokens_count", model="embedding") == 2


def test_gauges(traffic: Samples) -> None:
    for model in ("sentiment", "embedding"):
        assert value(traffic, "inferline_model_ready", model=model) == 1
        assert value(traffic, "inferline_queue_depth", model=model) == 0
    assert value(traffic, "inferline_inflight_requests") == 0
    assert value(traffic, "inferline_model_load_seconds") > 0
    # Without a GPU the GPU series are absent, not zero; with one, they are there.
    found = {n for n in names(traffic) if n.startswith("inferline_gpu_")}
    assert found == (set(gpu.GPU_METRICS) if gpu.present() else set())


def test_queue_metrics_of_producer_and_worker(
    server_factory: ServerFactory, redis_server: RedisServer, worker_factory: WorkerFactory
) -> None:
    queue = {
        "INFERLINE_REDIS_URL": redis_server.url,
        "INFERLINE_QUEUE_PREFIX": f"metrics{free_port()}",
        "INFERLINE_QUEUE_RECLAIM_IDLE_S": "1",  # the worker reads the stream's state each 0.5 s
    }
    server = server_factory(queue)
    with httpx.Client(base_url=server.url, timeout=30) as client:
        ids = []
        for i in range(4):
            reply = client.post("/v1/jobs", json={"model": "sentiment", "inputs": [f"text {i}"]})
            ids.append(reply.json()["id"])
        again = {"model": "embedding", "inputs": ["x"], "id": "same"}
        assert client.post("/v1/jobs", json=again).status_code == 202
        assert client.post("/v1/jobs", json=again).status_code == 202
        produced = scrape(server.url + "/metrics")
        assert value(produced, "inferline_jobs_total", model="sentiment", outcome="submitted") == 4
        assert value(produced, "inferline_jobs_total", model="embedding", outcome="submitted") == 1
        assert value(produced, "inferline_jobs_total", model="embedding", outcome="duplicate") == 1

        worker = worker_factory(queue)
        url = f"http://127.0.0.1:{worker.metrics_port}/metrics"
        stream = f"{queue['INFERLINE_QUEUE_PREFIX']}:jobs"
        lag = ("inferline_stream_lag", frozenset({("stream", stream)}))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            done = all(client.get(f"/v1/jobs/{i}").json()["status"] == "done" for i in ids)
            seen = scrape(url)
            if done and seen.get(lag) == 0:
                break
            time.sleep(0.2)
    assert value(seen, "inferline_jobs_total", model="sentiment", outcome="done") == 4
    assert value(seen, "inferline_jobs_total", model="embedding", outcome="done") == 1
    assert lag in seen  # read from Redis, not a default
    assert value(seen, "inferline_stream_lag", stream=stream) == 0
    assert value(seen, "inferline_stream_pending", stream=stream) == 0
    assert value(seen, "inferline_batch_size_sum", model="sentiment") >= 4
