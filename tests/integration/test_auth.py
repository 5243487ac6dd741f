"""Optional API keys on every protocol: 401 with WWW-Authenticate, open probes, per-key limits."""

from __future__ import annotations

import concurrent.futures
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import Server, ServerFactory

KEYS = {"INFERLINE_API_KEYS": "first-key-123, second-key-456"}


@pytest.fixture(scope="module")
def keyed(server_factory: ServerFactory) -> Server:
    return server_factory(KEYS)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"authorization": "Bearer wrong"},
        {"x-api-key": "first-key-12"},
        {"authorization": "Basic x"},
    ],
)
def test_missing_or_wrong_key_is_401(keyed: Server, headers: dict[str, str]) -> None:
    r = httpx.post(keyed.url + "/predict", json={"text": "hello"}, headers=headers)
    assert r.status_code == 401
    sent = any(v.startswith("Bearer") or k == "x-api-key" for k, v in headers.items())
    invalid = ', error="invalid_token"' if sent else ""  # RFC 6750: a key was sent
    assert r.headers["www-authenticate"] == f'Bearer realm="inferline"{invalid}'
    assert "error" in r.json()


@pytest.mark.parametrize(
    "headers", [{"authorization": "Bearer first-key-123"}, {"x-api-key": "second-key-456"}]
)
def test_valid_key_is_served(keyed: Server, headers: dict[str, str]) -> None:
    r = httpx.post(keyed.url + "/predict", json={"text": "hello"}, headers=headers)
    assert r.status_code == 200


def test_probes_metrics_and_docs_stay_open(keyed: Server) -> None:
    for path in (
        "/health",
        "/health/live",
        "/health/ready",
        "/v2/health/ready",
        "/v2/models/sentiment/ready",  # OIP files it under health, as gRPC ModelReady
        "/v2/models/sentiment/versions/1/ready",
        "/metrics",
        "/docs",
    ):
        assert httpx.get(keyed.url + path).status_code == 200, path


def test_every_protocol_asks_for_the_key(keyed: Server) -> None:
    r = httpx.post(keyed.url + "/v1/embeddings", json={"model": "all-MiniLM-L6-v2", "input": "x"})
    assert r.status_code == 401 and r.json()["error"]["message"]
    r = httpx.get(keyed.url + "/v2/models/sentiment")
    assert r.status_code == 401
    r = httpx.get(keyed.url + "/v2/models/sentiment/versions/1")
    assert r.status_code == 401
    r = httpx.post(keyed.url + "/embed", json={"texts": ["x"]})
    assert r.status_code == 401


def test_keys_never_reach_the_log(keyed: Server) -> None:
    httpx.post(
        keyed.url + "/predict", json={"text": "x"}, headers={"x-api-key": "leaky-secret-999"}
    )
    httpx.post(keyed.url + "/predict", json={"text": "x"}, headers={"x-api-key": "first-key-123"})
    log = keyed.output()
    assert "leaky-secret-999" not in log and "first-key-123" not in log


def test_keys_file(server_factory: ServerFactory, tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("from-a-file\n\n")
    server = server_factory({"INFERLINE_API_KEYS_FILE": str(keys)})
    ok = httpx.post(
        server.url + "/predict", json={"text": "x"}, headers={"x-api-key": "from-a-file"}
    )
    assert ok.status_code == 200
    assert httpx.post(server.url + "/predict", json={"text": "x"}).status_code == 401


def test_concurrent_requests_per_key_are_limited(server_factory: ServerFactory) -> None:
    server = server_factory(
        {**KEYS, "INFERLINE_MAX_CONCURRENT_PER_KEY": "1", "INFERLINE_LANES": "1"}
    )
    slow = {"texts": ["a long review of a very ordinary kitchen blender " * 20] * 256}
    headers = {"x-api-key": "first-key-123"}
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        first = pool.submit(
            httpx.post, server.url + "/predict", json=slow, headers=headers, timeout=60
        )
        time.sleep(0.3)  # the slow request is in flight before the probes start
        statuses = []
        while not first.done():
            r = httpx.post(server.url + "/predict", json={"text": "x"}, headers=headers)
            statuses.append(r.status_code)
            if r.status_code == 429:
                assert "in flight" in r.json()["error"] and "retry-after" in r.headers
                break
        assert first.result().status_code == 200
    assert 429 in statuses
    other = httpx.post(
        server.url + "/predict", json={"text": "x"}, headers={"x-api-key": "second-key-456"}
    )
    assert other.status_code == 200


def test_token_limit_per_request(server_factory: ServerFactory) -> None:
    server = server_factory({"INFERLINE_MAX_REQUEST_TOKENS": "100"})
    r = httpx.post(server.url + "/predict", json={"texts": ["one two three four five six"] * 20})
    assert r.status_code == 422 and "the limit is 100" in r.json()["error"]
