"""The job queue end to end, each part in its own process: HTTP submit, ``inferline worker``,
HTTP get; ``inferline submit`` of a file, with resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from subprocess import CompletedProcess
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import RedisServer, Server, ServerFactory, WorkerFactory, free_port

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def queue_env(redis_server: RedisServer) -> dict[str, str]:
    return {
        "INFERLINE_REDIS_URL": redis_server.url,
        "INFERLINE_QUEUE_PREFIX": f"http-{uuid.uuid4().hex[:8]}",
        "INFERLINE_QUEUE_BLOCK_MS": "200",
    }


@pytest.fixture(scope="module")
def queue_server(server_factory: ServerFactory, queue_env: dict[str, str]) -> Server:
    return server_factory(queue_env)


def wait_for(client: httpx.Client, job_id: str, limit: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        response = client.get(f"/v1/jobs/{job_id}")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        if body["status"] != "pending":
            return body
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} still pending")


def test_http_submit_worker_http_get(
    queue_server: Server, queue_env: dict[str, str], worker_factory: WorkerFactory
) -> None:
    with httpx.Client(base_url=queue_server.url, timeout=10) as client:
        response = client.post(
            "/v1/jobs", json={"model": "sentiment", "inputs": ["Great value.", "Broke at once."]}
        )
        assert response.status_code == 202, response.text
        job_id = response.json()["id"]
        assert client.get(f"/v1/jobs/{job_id}").json() == {"id": job_id, "status": "pending"}
        worker_factory(queue_env)
        body = wait_for(client, job_id)
        assert body["status"] == "done"
        assert [r["label"] for r in body["results"]] == ["Positive", "Negative"]

        response = client.post("/v1/jobs", json={"model": "embedding", "inputs": ["a cat"]})
        embedding = wait_for(client, response.json()["id"])
        assert len(embedding["results"][0]["embedding"]) == 384


def test_an_id_reused_for_other_work_is_409(queue_server: Server) -> None:
    """The second payload was accepted with 202 and answered with the first one's result."""
    job_id = f"reused-{uuid.uuid4().hex[:8]}"
    first = {"model": "sentiment", "inputs": ["I love it"], "id": job_id}
    with httpx.Client(base_url=queue_server.url, timeout=10) as client:
        assert client.post("/v1/jobs", json=first).status_code == 202
        assert client.post("/v1/jobs", json=first).status_code == 202  # the same work
        for other in ({"inputs": ["I hate it"]}, {"model": "embedding"}):
            clash = client.post("/v1/jobs", json=first | other)
            assert clash.status_code == 409, clash.text
            assert job_id in clash.json()["error"]


def test_caller_ids_make_one_job(
    queue_server: Server, worker_factory: WorkerFactory, queue_env: dict[str, str]
) -> None:
    worker_factory(queue_env)
    job = {"model": "sentiment", "inputs": ["Fine."], "id": f"order-{uuid.uuid4().hex}"}
    with httpx.Client(base_url=queue_server.url, timeout=10) as client:
        assert [client.post("/v1/jobs", json=job).json() for _ in range(3)] == [
            {"id": job["id"]}
        ] * 3
        first = wait_for(client, str(job["id"]))
        assert client.post("/v1/jobs", json=job).status_code == 202
        assert client.get(f"/v1/jobs/{job['id']}").json() == first


def test_bad_jobs_and_unknown_ids(queue_server: Server) -> None:
    with httpx.Client(base_url=queue_server.url, timeout=10) as client:
        assert client.get("/v1/jobs/no-such-job").status_code == 404
        for bad in (
            {"model": "translation", "inputs": ["x"]},
            {"model": "sentiment", "inputs": []},
            {"model": "sentiment", "inputs": "x"},
            {"model": "sentiment"},
            {"model": "sentiment", "inputs": ["x"], "id": "a b"},
            {"model": "sentiment", "inputs": ["x"], "extra": 1},
        ):
            response = client.post("/v1/jobs", json=bad)
            assert response.status_code == 422, (bad, response.text)
            assert "error" in response.json()


def test_without_redis_jobs_answer_503(server: Server) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as client:
        response = client.post("/v1/jobs", json={"model": "sentiment", "inputs": ["x"]})
        assert response.status_code == 503
        assert "INFERLINE_REDIS_URL" in response.json()["error"]
        assert client.get("/v1/jobs/x").status_code == 503
        assert client.post("/predict", json={"text": "still works"}).status_code == 200


def test_cli_submit_waits_and_resumes(
    tmp_path: Path, queue_env: dict[str, str], worker_factory: WorkerFactory
) -> None:
    texts = [f"review number {i}: {'great' if i % 2 else 'terrible'} product" for i in range(1000)]
    source = tmp_path / "reviews.jsonl"
    source.write_bytes(b"".join(orjson.dumps({"text": t}) + b"\n" for t in texts))
    out = tmp_path / "out.jsonl"
    url = queue_env["INFERLINE_REDIS_URL"]
    command = ["submit", str(source), "--model", "sentiment", "--redis-url", url]
    env = {"INFERLINE_QUEUE_PREFIX": queue_env["INFERLINE_QUEUE_PREFIX"]}
    # Enqueue with no worker running, then resume with --wait once one is.
    first = run_cli(*command, env=env, timeout=60)
    assert first.returncode == 0 and b"1000 new" in first.stderr, first.stderr.decode()
    worker_factory(queue_env)
    second = run_cli(*command, "--wait", "-o", str(out), env=env, timeout=120)
    assert second.returncode == 0, second.stderr.decode()
    assert b"0 new, 1000 already known" in second.stderr
    assert b"done 1000 failed 0 pending 0" in second.stderr
    lines = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert len(lines) == 1000
    assert [line["id"].rsplit(":", 1)[1] for line in lines] == [str(i) for i in range(1000)]
    assert lines[0]["results"][0]["label"] == "Negative"
    assert lines[1]["results"][0]["label"] == "Positive"


def test_cli_submit_waits_for_room_in_a_full_stream(
    tmp_path: Path, queue_env: dict[str, str], worker_factory: WorkerFactory
) -> None:
    """A file longer than INFERLINE_QUEUE_MAX_LEN goes in one run: submit waits for room."""
    texts = [f"review {i}: {'fine' if i % 2 else 'broken'}" for i in range(300)]
    source = tmp_path / "many.jsonl"
    source.write_bytes(b"".join(orjson.dumps(t) + b"\n" for t in texts))
    env = {
        **queue_env,
        "INFERLINE_QUEUE_PREFIX": f"room-{uuid.uuid4().hex[:8]}",  # a stream of its own
        "INFERLINE_QUEUE_MAX_LEN": "200",
        "INFERLINE_QUEUE_RECLAIM_IDLE_S": "1",
    }
    worker_factory(env)  # trims what it acknowledged every half second
    out = tmp_path / "out.jsonl"
    done = run_cli("submit", str(source), "--model", "sentiment", "--wait", "-o", str(out), env=env)
    assert done.returncode == 0, done.stderr.decode()
    assert b"the job queue is full (200 jobs); 100 job(s) wait for room" in done.stderr
    assert b"300 job(s), 300 new" in done.stderr
    assert len(out.read_bytes().splitlines()) == 300


def run_cli(*args: str, env: dict[str, str], timeout: float = 120) -> CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "inferline.cli", *args],
        env={**os.environ, **env},
        capture_output=True,
        timeout=timeout,
        check=False,
    )


def test_a_worker_signalled_while_loading_stops_at_once(
    tmp_path: Path, queue_env: dict[str, str]
) -> None:
    """As PID 1 with no handler yet, SIGTERM during the model load was dropped, and the pod
    waited out its grace period: the worker handles it from before the load."""
    log = tmp_path / "worker.log"
    env = {**os.environ, **queue_env, "INFERLINE_WORKER_METRICS_PORT": "0"}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "inferline.cli", "worker"], env=env, stdout=out, stderr=out
        )
    try:
        deadline = time.monotonic() + 60
        while "worker loading the models" not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log.read_text()
    finally:
        proc.kill()
    text = log.read_text()
    assert "received SIGTERM while loading: stopped" in text and "Traceback" not in text


def test_full_stream_is_429_over_http(
    server_factory: ServerFactory, redis_server: RedisServer
) -> None:
    env = {
        "INFERLINE_REDIS_URL": redis_server.url,
        "INFERLINE_QUEUE_PREFIX": f"full-{uuid.uuid4().hex[:8]}",
        "INFERLINE_QUEUE_MAX_LEN": "3",
    }
    server = server_factory(env)
    with httpx.Client(base_url=server.url, timeout=10) as client:
        for i in range(3):
            job = {"model": "sentiment", "inputs": [f"review {i}"]}
            assert client.post("/v1/jobs", json=job).status_code == 202
        refused = client.post("/v1/jobs", json={"model": "sentiment", "inputs": ["one more"]})
        assert refused.status_code == 429, refused.text
        assert "retry-after" in refused.headers and refused.json()["error"]


def test_password_protected_redis(
    server_factory: ServerFactory, worker_factory: WorkerFactory, tmp_path: Path
) -> None:
    guarded = RedisServer(
        free_port(), tmp_path, ("--save", "", "--appendonly", "no", "--requirepass", "s3cret-pw")
    )
    guarded.start()
    try:
        url = f"redis://:s3cret-pw@127.0.0.1:{guarded.port}/0"
        env = {"INFERLINE_REDIS_URL": url, "INFERLINE_QUEUE_BLOCK_MS": "200"}
        server = server_factory(env)
        worker_factory(env)
        with httpx.Client(base_url=server.url, timeout=10) as client:
            response = client.post("/v1/jobs", json={"model": "sentiment", "inputs": ["Lovely."]})
            assert response.status_code == 202, response.text
            assert wait_for(client, response.json()["id"])["status"] == "done"
        wrong = server_factory({**env, "INFERLINE_REDIS_URL": url.replace("s3cret-pw", "nope")})
        refused = httpx.post(wrong.url + "/v1/jobs", json={"model": "sentiment", "inputs": ["x"]})
        assert refused.status_code == 503, refused.text
        assert "s3cret" not in refused.text and "nope" not in refused.text
    finally:
        guarded.stop()


def test_a_restarted_redis_is_used_at_once_and_a_down_one_is_not_named(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    """After Redis restarts, the API's pooled connections are dead; each failed its next
    request with 503 until redis-py noticed. And the 503 named Redis's address."""
    store = RedisServer(free_port(), tmp_path, ("--save", "", "--appendonly", "no"))
    store.start()
    try:
        server = server_factory({"INFERLINE_REDIS_URL": store.url})
        job = {"model": "sentiment", "inputs": ["Works."]}
        with httpx.Client(base_url=server.url, timeout=10) as client:
            assert client.post("/v1/jobs", json=job).status_code == 202  # pools a connection
            store.stop()
            down = client.post("/v1/jobs", json=job)
            assert down.status_code == 503 and "unreachable" in down.json()["error"]
            assert str(store.port) not in down.text and "127.0.0.1" not in down.text
            assert str(store.port) in server.wait_for_output(str(store.port))  # in the log
            store.start()
            for _ in range(3):  # each on a connection Redis closed by restarting
                assert client.post("/v1/jobs", json=job).status_code == 202
                assert client.get("/v1/jobs/not-there").status_code == 404
    finally:
        store.stop()


@pytest.mark.parametrize("job_id", ["abc\n", "a" * 128 + "\n", "a b", ""])
def test_a_job_id_outside_the_rule_is_422(queue_server: Server, job_id: str) -> None:
    """The rule was checked with re.match and "$", which also matches before a final
    newline: "abc\n" was a job of its own, beside "abc"."""
    body = {"model": "sentiment", "inputs": ["x"], "id": job_id}
    reply = httpx.post(queue_server.url + "/v1/jobs", json=body)
    assert reply.status_code == 422 and "'id' must be 1 to 128" in reply.json()["error"]
