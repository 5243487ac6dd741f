"""The job queue over TLS with a password: ``rediss://`` to a redis-server that serves TLS
only, with a CA made here. Server (``/v1/jobs``) and worker both go through it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.certs import make_certificates
from tests.conftest import RedisServer, ServerFactory, WorkerFactory, free_port

pytestmark = pytest.mark.integration

PASSWORD = "s3cret-pass"


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RedisServer, Path]]:
    directory = tmp_path_factory.mktemp("redis-tls")
    make_certificates(directory)
    port = free_port()
    server = RedisServer(
        port,
        directory,
        (
            "--port", "0",  # no plain-text port at all
            "--tls-port", str(port),
            "--tls-cert-file", str(directory / "server.crt"),
            "--tls-key-file", str(directory / "server.key"),
            "--tls-ca-cert-file", str(directory / "ca.crt"),
            "--tls-auth-clients", "no",
            "--requirepass", PASSWORD,
            "--save", "",
            "--appendonly", "no",
        ),
    )  # fmt: skip
    server.start()
    yield server, directory / "ca.crt"
    server.stop()


def test_jobs_go_through_tls_with_a_password(
    tls_redis: tuple[RedisServer, Path],
    server_factory: ServerFactory,
    worker_factory: WorkerFactory,
) -> None:
    redis, ca = tls_redis
    url = f"rediss://:{PASSWORD}@127.0.0.1:{redis.port}/0?ssl_ca_certs={ca}"
    queue = {"INFERLINE_REDIS_URL": url, "INFERLINE_QUEUE_PREFIX": f"tls{free_port()}"}
    server = server_factory(queue)
    worker_factory(queue)
    with httpx.Client(base_url=server.url, timeout=30) as client:
        reply = client.post("/v1/jobs", json={"model": "sentiment", "inputs": ["works great"]})
        assert reply.status_code == 202
        job = reply.json()["id"]
        deadline = time.monotonic() + 30
        while (outcome := client.get(f"/v1/jobs/{job}").json())["status"] == "pending":
            assert time.monotonic() < deadline
            time.sleep(0.1)
    assert outcome["status"] == "done"
    assert outcome["results"][0]["label"] == "Positive"
    assert PASSWORD not in server.output()  # the URL's password is never logged


def test_plain_text_to_a_tls_port_is_a_clear_503(
    tls_redis: tuple[RedisServer, Path], server_factory: ServerFactory
) -> None:
    redis, _ = tls_redis
    url = f"redis://:{PASSWORD}@127.0.0.1:{redis.port}/0"
    server = server_factory({"INFERLINE_REDIS_URL": url, "INFERLINE_QUEUE_PREFIX": "plain"})
    reply = httpx.post(server.url + "/v1/jobs", json={"model": "sentiment", "inputs": ["x"]})
    assert reply.status_code == 503
    assert "unreachable" in reply.json()["error"]
    assert PASSWORD not in reply.text
