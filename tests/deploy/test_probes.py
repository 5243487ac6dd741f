"""Every path the manifests and images probe is served by the real app, 200 once ready."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.conftest import ServerFactory
from tests.deploy.dockerfile import parse
from tests.deploy.kustomize import containers
from tests.deploy.manifests import DOCKER, OVERLAYS, of_kind, rendered, walk

pytestmark = pytest.mark.integration


def probe_paths() -> set[str]:
    paths: set[str] = set()
    for overlay in OVERLAYS:
        for workload in of_kind(rendered(overlay), "Deployment"):
            for container in containers(workload):
                for node in walk(container):
                    if isinstance(node, dict) and "httpGet" in node:
                        paths.add(node["httpGet"]["path"])
    for name in ("Dockerfile", "Dockerfile.gpu"):
        for check in parse(DOCKER / name)[-1].all("HEALTHCHECK"):
            paths.update(re.findall(r"'(/[\w/]+)'", check.args))
    return paths


def test_probe_paths_are_served(server_factory: ServerFactory) -> None:
    paths = probe_paths()
    assert paths == {"/health/live", "/health/ready"}
    server = server_factory()  # returns once /health/ready answers 200
    with httpx.Client(base_url=server.url, timeout=10) as client:
        for path in sorted(paths):
            response = client.get(path)
            assert response.status_code == 200, (path, response.text)
