"""The worker's liveness asks its event loop: a stuck loop is reported, a closed one too."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry

from inferline.queue.health import WorkerHealth


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


def test_a_running_loop_is_alive_and_readiness_gives_its_reason(
    loop: asyncio.AbstractEventLoop,
) -> None:
    reason: list[str | None] = ["loading the models"]
    health = WorkerHealth(loop, CollectorRegistry(), lambda: reason[0], loop_timeout=5)
    assert health.live() == ("200 OK", {"status": "alive"})
    status, body = health.ready()
    assert status.startswith("503") and body["reason"] == "loading the models"
    reason[0] = None
    assert health.ready() == ("200 OK", {"status": "ready"})


def test_a_blocked_loop_is_stalled(loop: asyncio.AbstractEventLoop) -> None:
    health = WorkerHealth(loop, CollectorRegistry(), lambda: None, loop_timeout=0.2)
    release = threading.Event()
    loop.call_soon_threadsafe(release.wait, 30)  # a blocking call on the loop
    try:
        status, body = health.live()
        assert status.startswith("503") and body["status"] == "stalled"
        assert "did not run a callback within 0.2 s" in body["reason"]
        assert health.ready()[0].startswith("503")
    finally:
        release.set()
    deadline = time.monotonic() + 10
    while health.live()[0] != "200 OK" and time.monotonic() < deadline:
        pass
    assert health.live()[0] == "200 OK"


def test_a_closed_loop_is_reported() -> None:
    loop = asyncio.new_event_loop()
    loop.close()
    health = WorkerHealth(loop, CollectorRegistry(), lambda: None)
    assert health.live() == (
        "503 Service Unavailable",
        {"status": "stalled", "reason": "the event loop has stopped"},
    )
