"""Every path the manifests probe is served by the real app, 200 once ready; the images'
HEALTHCHECK finds the API or a worker."""

from __future__ import annotations

import http.server
import threading

import httpx
import pytest

from tests.conftest import RedisServer, ServerFactory, WorkerFactory, free_port
from tests.deploy.dockerfile import run_healthcheck
from tests.deploy.kustomize import containers
from tests.deploy.manifests import OVERLAYS, of_kind, rendered, walk

pytestmark = pytest.mark.integration


def probe_paths() -> set[str]:
    paths: set[str] = set()
    for overlay in OVERLAYS:
        for workload in of_kind(rendered(overlay), "Deployment"):
            for container in containers(workload):
                for node in walk(container):
                    if isinstance(node, dict) and "httpGet" in node:
                        paths.add(node["httpGet"]["path"])
    return paths


def test_probe_paths_are_served(server_factory: ServerFactory) -> None:
    paths = probe_paths()
    assert paths == {"/health/live", "/health/ready"}
    server = server_factory()  # returns once /health/ready answers 200
    with httpx.Client(base_url=server.url, timeout=10) as client:
        for path in sorted(paths):
            response = client.get(path)
            assert response.status_code == 200, (path, response.text)


def test_the_image_healthcheck_finds_the_api_or_the_worker(
    server_factory: ServerFactory, worker_factory: WorkerFactory, redis_server: RedisServer
) -> None:
    nothing = str(free_port())
    server = server_factory()
    port = server.url.rsplit(":", 1)[1]
    assert run_healthcheck(INFERLINE_PORT=port, INFERLINE_WORKER_METRICS_PORT=nothing) == 0
    worker = worker_factory(
        {"INFERLINE_REDIS_URL": redis_server.url, "INFERLINE_QUEUE_PREFIX": "healthcheck"}
    )
    worker_port = str(worker.metrics_port)
    assert run_healthcheck(INFERLINE_PORT=nothing, INFERLINE_WORKER_METRICS_PORT=worker_port) == 0
    assert run_healthcheck(INFERLINE_PORT=nothing, INFERLINE_WORKER_METRICS_PORT=nothing) == 1
    # A port that answers, but not with 200, is not alive: no falling through to the next.
    other = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    try:
        bad = str(other.server_address[1])  # answers 501
        code = run_healthcheck(INFERLINE_PORT=bad, INFERLINE_WORKER_METRICS_PORT=worker_port)
        assert code == 1
    finally:
        other.shutdown()
        other.server_close()
