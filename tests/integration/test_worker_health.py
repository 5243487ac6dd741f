"""The worker's own port, as the kubelet and Prometheus use it: liveness, readiness that
follows Redis away and back, metrics, and JSON errors for anything else."""

from __future__ import annotations

import signal
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.conftest import RedisServer, WorkerFactory, free_port

pytestmark = pytest.mark.integration


def wait_for(url: str, status: int, timeout: float = 30) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while True:
        response = httpx.get(url, timeout=5)
        if response.status_code == status or time.monotonic() > deadline:
            return response
        time.sleep(0.05)


def test_probes_follow_redis_and_the_drain(tmp_path: Path, worker_factory: WorkerFactory) -> None:
    redis = RedisServer(free_port(), tmp_path, ("--save", "", "--appendonly", "no"))
    redis.start()
    try:
        worker = worker_factory(
            {
                "INFERLINE_REDIS_URL": redis.url,
                "INFERLINE_QUEUE_PREFIX": f"health-{uuid.uuid4().hex[:8]}",
                "INFERLINE_QUEUE_BLOCK_MS": "100",
                "INFERLINE_SHUTDOWN_GRACE_S": "5",
            }
        )
        base = f"http://127.0.0.1:{worker.metrics_port}"
        assert httpx.get(base + "/health/live").json() == {"status": "alive"}
        ready = wait_for(base + "/health/ready", 200)
        assert ready.json() == {"status": "ready"}
        metrics = httpx.get(base + "/metrics")
        assert metrics.status_code == 200 and "inferline_jobs_total" in metrics.text
        missing = httpx.get(base + "/nope")
        assert missing.status_code == 404 and missing.json()["error"] == "no such path: /nope"
        refused = httpx.post(base + "/health/ready")
        assert refused.status_code == 405 and refused.headers["allow"] == "GET, HEAD"
        for path in ("/metrics", "/health/live"):  # HEAD: GET's status and headers, no body
            head = httpx.head(base + path)
            assert head.status_code == 200 and head.content == b"", path
            assert int(head.headers["content-length"]) > 0, path
        assert httpx.post(base + "/metrics").status_code == 405

        redis.stop()  # alive, but not ready: a restart would not bring Redis back
        down = wait_for(base + "/health/ready", 503)
        assert down.status_code == 503, down.text
        assert "Redis cannot be reached" in down.json()["reason"], down.text
        assert httpx.get(base + "/health/live").status_code == 200
        redis.start()
        assert wait_for(base + "/health/ready", 200).status_code == 200

        worker.proc.send_signal(signal.SIGTERM)  # draining: not ready, until it exits
        draining = wait_for(base + "/health/ready", 503, timeout=5)
        if worker.proc.poll() is None:  # it may already be gone: nothing was in hand
            assert draining.json()["status"] == "not ready"
        assert worker.proc.wait(30) == 0
    finally:
        redis.stop()
