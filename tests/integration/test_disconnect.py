"""A client that goes away cancels its queued texts: the model never runs them. Under
inferline's own protocol the lost connection says so at once (the scope's ON_DISCONNECT
hook); under another ASGI server a watcher task waits for http.disconnect."""

from __future__ import annotations

import asyncio
import re
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Sequence

import httpx
import orjson
import pytest

from inferline.api.factory import create_app
from inferline.api.http import Message
from inferline.config import Settings
from inferline.service import Service
from inferline.types import FloatArray, Item
from tests.conftest import Server, ServerFactory, model_dir
from tests.integration.connection import Connection


@pytest.mark.parametrize("hooked", [True, False], ids=["hook", "watcher"])
def test_disconnect_cancels_queued_texts(hooked: bool) -> None:
    async def scenario() -> None:
        service = Service(Settings(model_dir=model_dir(), lanes=1, max_batch_size=1))
        await service.start()
        batcher = service.models["sentiment"].batcher
        real_infer = batcher._infer
        gate = asyncio.Event()
        seen: list[str] = []

        async def gated(items: Sequence[Item]) -> Sequence[FloatArray | BaseException]:
            seen.extend(str(i.tokens) for i in items)
            await gate.wait()
            return await real_infer(items)

        batcher._infer = gated
        app = create_app(service.settings, service)

        def call(text: str, connection: Connection | None = None) -> Awaitable[list[Message]]:
            connection = connection or Connection(hooked)
            return asyncio.ensure_future(connection.post(app, "/predict", {"text": text}))

        # lanes=1 lets two batches be in flight; both hold at the gate.
        running = [call(f"holding the lane {i}") for i in range(2)]
        await asyncio.sleep(0.1)
        leaving = Connection(hooked)
        victim = call("a client who will hang up " * 3, leaving)
        await asyncio.sleep(0.05)
        assert batcher.queue_depth == 1
        leaving.lose()
        assert await victim == []  # no response: the client is gone
        assert leaving.registered == []  # called and taken back: nothing is left behind
        assert batcher.queue_depth == 0
        gate.set()
        for done in await asyncio.gather(*running):
            assert done[0]["status"] == 200
        assert len(seen) == 2  # the victim's text never reached the engine
        await service.close(grace=5)

    asyncio.run(scenario())


# Three short texts, and a body over uvicorn's 64 KiB read buffer: once that much is
# buffered uvicorn stops reading the socket, and a hang-up went unseen until the answer.
HANGING_UP = {
    "small": ["hanging up 1", "hanging up 2", "hanging up 3"],
    "large": [f"hanging up {i} " + "and never reading the answer " * 50 for i in range(200)],
}


@pytest.mark.parametrize("victim", list(HANGING_UP))
def test_a_lost_connection_cancels_its_queued_texts_on_a_real_server(
    server_factory: ServerFactory, victim: str
) -> None:
    """Through api/wire.py's protocol: one lane runs a long batch and another waits for it,
    a client queues its texts and hangs up, and the queue empties while the lane is still
    busy; the model never runs those texts."""
    # The test's steps must fit within the first batch: as many long texts as a request
    # may carry (256 of 256 tokens, about 2 s on one thread here), so that a slow or busy
    # machine still leaves room.
    texts = 256
    server = server_factory(
        {
            "INFERLINE_LANES": "1",
            "INFERLINE_MAX_BATCH_SIZE": str(texts),
            "INFERLINE_MAX_BATCH_TOKENS": str(texts * 256),
            "INFERLINE_PACK_ROWS": str(texts),  # a request's long texts make one batch
            "INFERLINE_REQUEST_TIMEOUT_S": "120",
        }
    )
    long = " ".join(["the battery died after a week and the screen flickered"] * 40)
    statuses: list[int] = []

    def load() -> None:
        answer = httpx.post(server.url + "/predict", json={"texts": [long] * texts}, timeout=120)
        statuses.append(answer.status_code)

    loads = [threading.Thread(target=load) for _ in range(2)]
    before, queued = sample(server, BATCHED), sample(server, TOKENISED)
    for running, thread in enumerate(loads, 1):
        thread.start()
        # Its texts are tokenised and queued (in the same step), then taken as one batch.
        wait_until(lambda: sample(server, TOKENISED) - queued == running)  # noqa: B023
        wait_until(lambda: sample(server, DEPTH) == 0)
    hanging_up = HANGING_UP[victim]
    body = orjson.dumps({"texts": hanging_up})
    port = int(server.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(
            b"POST /predict HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        wait_until(lambda: sample(server, DEPTH) == len(hanging_up))
    wait_until(lambda: sample(server, DEPTH) == 0)
    assert all(thread.is_alive() for thread in loads), "the lane finished first: lengthen it"
    for thread in loads:
        thread.join()
    assert statuses == [200, 200]
    assert sample(server, BATCHED) - before == 2 * texts  # none of the hanging-up texts
    assert httpx.get(server.url + "/health/ready").status_code == 200


BATCHED = 'inferline_batch_size_sum{model="sentiment"}'
DEPTH = 'inferline_queue_depth{model="sentiment"}'
TOKENISED = 'inferline_input_tokens_count{model="sentiment"}'  # requests about to queue


def sample(server: Server, series: str) -> float:
    text = httpx.get(server.url + "/metrics").text
    found = re.search(rf"^{re.escape(series)} (\S+)$", text, re.M)
    if found is None and series == TOKENISED:
        return 0.0  # a histogram's series appear with its first observation
    assert found, f"no {series} in /metrics"
    return float(found.group(1))


def wait_until(condition: Callable[[], bool], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting for the server"
        time.sleep(0.002)
