"""Readiness around model loading, start-up failures, and shutdown on signals."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton
from tritonclient.utils import InferenceServerException

from inferline.api.factory import create_app
from inferline.config import Settings
from inferline.errors import Unavailable
from inferline.service import Service, State
from inferline.telemetry import context
from inferline.telemetry.context import RequestRecord
from tests.conftest import Server, ServerFactory, model_dir


def test_ready_only_after_load_and_warm_up() -> None:
    async def scenario() -> None:
        service = Service(Settings(model_dir=model_dir()))
        app = create_app(service.settings, service)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            r = await c.get("/health/ready")
            assert r.status_code == 503 and "loading" in r.json()["error"]
            r = await c.post("/predict", json={"text": "too early"})
            assert r.status_code == 503
            assert (await c.get("/health/live")).status_code == 200
            await service.start()
            assert service.state is State.READY
            assert (await c.get("/health/ready")).status_code == 200
            assert (await c.post("/predict", json={"text": "now"})).status_code == 200
            await service.close(grace=5)
            assert (await c.get("/health/ready")).status_code == 503
            assert (await c.post("/predict", json={"text": "late"})).status_code == 503

    asyncio.run(scenario())


def test_a_queue_smaller_than_the_warm_up_batch_still_gets_ready() -> None:
    async def scenario() -> None:
        service = Service(Settings(model_dir=model_dir(), max_queue_items=1))
        await service.start()
        assert service.state is State.READY, service.not_ready_reason()
        assert len(await service.results("sentiment", ["one at a time"])) == 1
        await service.close(grace=5)

    asyncio.run(scenario())


def test_failed_load_reports_why(tmp_path: Path) -> None:
    async def scenario() -> None:
        service = Service(Settings(model_dir=tmp_path / "missing"))
        await service.start()
        assert service.state is State.FAILED
        assert "inferline model build" in service.not_ready_reason()
        assert str(tmp_path) not in service.not_ready_reason()
        assert service.failure is not None and "missing" in service.failure

    asyncio.run(scenario())


def test_token_limits_below_one_texts_are_raised_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """They were raised silently, and a 422 then named 256 where 100 had been set."""

    async def scenario() -> None:
        settings = Settings(model_dir=model_dir(), max_queue_tokens=100, max_batch_tokens=1)
        service = Service(settings)
        await service.start()
        try:
            assert service.models["sentiment"].batcher.limits.max_queue_tokens == 256
        finally:
            await service.close()

    with caplog.at_level(logging.WARNING, logger="inferline.service"):
        asyncio.run(scenario())
    assert "max_queue_tokens 100 is below the 256 tokens one text may hold" in caplog.text
    assert "max_batch_tokens 1 is below the 256 tokens" in caplog.text


def test_the_warm_up_leaves_no_drain_rate_behind() -> None:
    """Its 8 short texts set the drain rate that the first Retry-Afters came from: 1 s with
    long texts queued, for the first seconds."""

    async def scenario() -> None:
        service = Service(Settings(model_dir=model_dir()))
        await service.start()
        try:
            batcher = service.models["sentiment"].batcher
            assert batcher.drain_rate == 0
            await service.infer("sentiment", ["a review of a blender"] * 4)
            assert batcher.drain_rate > 0
        finally:
            await service.close()

    asyncio.run(scenario())


def test_serve_without_model_exits_with_a_clear_message(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "inferline.cli",
            "serve",
            "--model-dir",
            str(tmp_path),
            "--port",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert "inferline model build" in proc.stderr


@pytest.mark.parametrize(("flag", "other"), [("--port", "--grpc-port"), ("--grpc-port", "--port")])
def test_a_taken_port_is_one_line_and_exit_code_2(flag: str, other: str) -> None:
    """They exited 3 (HTTP, uvicorn's code) and 1 (gRPC), unlike every other mistake."""
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        command = ["serve", "--model-dir", str(model_dir()), flag, port, other, "0"]
        proc = subprocess.run(
            [sys.executable, "-m", "inferline.cli", *command],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert proc.returncode == 2, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("inferline: cannot bind ") and f":{port}" in last, last
    assert "Traceback" not in proc.stderr


def test_sigterm_and_sigint_exit_cleanly(server_factory: ServerFactory) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        server = server_factory()
        assert httpx.post(server.url + "/predict", json={"text": "ok"}).status_code == 200
        assert server.stop(sig) == 0
        assert "Traceback" not in server.output()


def test_a_second_signal_stops_waiting_without_a_traceback(
    server_factory: ServerFactory,
) -> None:
    """The first SIGTERM drains for up to the grace period (60 s here); a second one, as
    `timeout`, or an impatient operator, sends, exits at once, and quietly."""
    server = server_factory({"INFERLINE_SHUTDOWN_GRACE_S": "60", "INFERLINE_LANES": "1"})
    slow = {"texts": ["a long review of a very ordinary kitchen blender " * 20] * 256}
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pending = pool.submit(httpx.post, server.url + "/predict", json=slow, timeout=60)
        time.sleep(0.5)  # in flight
        server.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        started = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        server.proc.wait(20)
        assert time.monotonic() - started < 15
        try:
            answered: httpx.Response | None = pending.result()
        except httpx.HTTPError:
            answered = None  # the connection closed first
        assert answered is None or answered.status_code == 503
    output = server.output()
    assert "received SIGTERM: draining" in output
    assert "Traceback" not in output and '"level":"error"' not in output, output[-3000:]


def test_http_and_grpc_share_one_grace_period(server_factory: ServerFactory) -> None:
    """Kubernetes kills the pod at terminationGracePeriodSeconds, so HTTP must not start a
    grace period of its own after the gRPC drain has used one up."""
    grace = 4.0
    env = {"INFERLINE_SHUTDOWN_GRACE_S": str(grace), "INFERLINE_LANES": "1"}
    server = server_factory(env)
    texts = ["a long review of a very ordinary kitchen blender " * 40] * 200
    tensor = triton.InferInput("text", [len(texts)], "BYTES")
    tensor.set_data_from_numpy(np.array([t.encode() for t in texts], dtype=np.object_))
    client = triton.InferenceServerClient(server.grpc_target)

    # Cut off by the shutdown or not: what they answer is not the point here.
    def over_grpc() -> None:
        with contextlib.suppress(InferenceServerException):
            client.infer("sentiment", [tensor], client_timeout=60)

    def over_http() -> None:
        with contextlib.suppress(httpx.HTTPError):
            httpx.post(server.url + "/predict", json={"texts": texts}, timeout=60)

    # About 800 long texts on one lane: more work than two grace periods.
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        calls = [pool.submit(over_grpc), pool.submit(over_grpc)]
        calls += [pool.submit(over_http), pool.submit(over_http)]
        time.sleep(1.0)  # all four in flight
        started = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(30) == 0
        took = time.monotonic() - started
        concurrent.futures.wait(calls)
    client.close()
    assert took < grace + 2.5, took  # one grace period, and HTTP's minimum of 1 s
    assert "Traceback" not in server.output()


def test_http_gets_the_whole_grace_period(server_factory: ServerFactory) -> None:
    """HTTP's share was cut to whole seconds: of a 2.5 s grace period, 2 s."""
    grace = 2.5
    server = server_factory({"INFERLINE_SHUTDOWN_GRACE_S": str(grace), "INFERLINE_LANES": "1"})
    texts = ["a long review of a very ordinary kitchen blender " * 40] * 256
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        calls = [
            pool.submit(httpx.post, server.url + "/predict", json={"texts": texts}, timeout=60)
            for _ in range(2)
        ]
        time.sleep(1.0)  # in flight: more work than the grace period
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(30) == 0
        concurrent.futures.wait(calls)
    lines = [json.loads(line) for line in server.output().splitlines() if line.startswith("{")]
    signalled = next(li["time"] for li in lines if li["message"] == "received SIGTERM: draining")
    cut = next(li["time"] for li in lines if "timeout graceful shutdown" in li["message"])
    waited = datetime.fromisoformat(cut) - datetime.fromisoformat(signalled)
    assert waited.total_seconds() >= grace - 0.05, waited  # a lower bound: slowness lengthens it


def test_a_request_mid_upload_at_the_signal_is_served(server_factory: ServerFactory) -> None:
    """Its headers came before SIGTERM, so it is in flight, not new: it got 503."""
    server = server_factory({"INFERLINE_SHUTDOWN_GRACE_S": "20"})
    host, port = server.url.removeprefix("http://").split(":")
    body = b'{"text": "arrived after the signal"}'
    with socket.create_connection((host, int(port))) as conn:
        head = f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n"
        conn.sendall(head.encode() + body[:8])
        time.sleep(0.5)  # the request's task has started
        server.proc.send_signal(signal.SIGTERM)
        server.wait_for_output("received SIGTERM: draining")  # new requests get 503 now
        conn.sendall(body[8:])
        conn.settimeout(20)
        answer = conn.recv(65536)
    assert answer.startswith(b"HTTP/1.1 200"), answer
    assert b'"label"' in answer
    assert server.proc.wait(30) == 0


def test_a_request_at_a_signal_during_start_up_is_still_503() -> None:
    """Nothing is accepted while starting: such a request got 404, its model not loaded."""
    service = Service(Settings(model_dir=model_dir()))
    token = context.enter(RequestRecord("rest"))
    try:
        service.begin_drain()
        for lookup in (service.model, service.chat):
            with pytest.raises(Unavailable, match="shutting down"):
                lookup("sentiment")
    finally:
        context.leave(token)


def test_a_keep_alive_under_a_second_is_kept(server_factory: ServerFactory) -> None:
    """It was rounded up to 1 s (and 2.5 s down to 2)."""
    server = server_factory({"INFERLINE_KEEP_ALIVE_S": "0.2"})
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as conn:
        conn.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert conn.recv(4096).startswith(b"HTTP/1.1 200")
        answered = time.monotonic()
        conn.settimeout(10)
        assert conn.recv(4096) == b""  # closed by the server, idle
        assert time.monotonic() - answered < 0.8  # 1 s before


def test_lanes_run_below_the_event_loop(client: httpx.Client, server: Server) -> None:
    """Niceness per thread from /proc: the loop (the main thread) keeps the niceness it was
    started with, the lanes get 19."""
    assert client.post("/predict", json={"texts": ["one", "two", "three"]}).status_code == 200
    pid = server.proc.pid
    nice = {
        int(task.name): int((task / "stat").read_text().rsplit(")", 1)[1].split()[16])
        for task in Path(f"/proc/{pid}/task").iterdir()
    }
    assert nice[pid] == os.getpriority(os.PRIO_PROCESS, 0)
    assert list(nice.values()).count(19) >= 2  # at least the two lanes of the sentiment model
