"""The request path leaves no reference cycles: under overload the garbage collector's full
passes over such garbage held the event loop for 20 to 35 ms at a time."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Sequence

import pytest

from inferline.api.factory import create_app
from inferline.api.http import Message
from inferline.config import Settings
from inferline.service import Service
from inferline.types import FloatArray, Item
from tests.conftest import model_dir
from tests.integration.connection import Connection


async def gated_service(settings: Settings) -> tuple[Service, asyncio.Event]:
    """The real service, whose sentiment batches wait for the returned event to be set."""
    service = Service(settings)
    await service.start()
    batcher = service.models["sentiment"].batcher
    real_infer = batcher._infer
    gate = asyncio.Event()

    async def gated(items: Sequence[Item]) -> Sequence[FloatArray | BaseException]:
        await gate.wait()
        return await real_infer(items)

    batcher._infer = gated
    return service, gate


@pytest.mark.parametrize("hooked", [True, False], ids=["hook", "watcher"])
def test_refusals_and_slow_requests_leave_no_cyclic_garbage(hooked: bool) -> None:
    """``hooked``: the scope carries api/wire.py's ON_DISCONNECT hook, as under inferline's
    own protocol, and no watcher task starts; otherwise one does after 50 ms."""

    async def scenario() -> None:
        # A queue of 8 texts: the warm-up's size.
        settings = Settings(model_dir=model_dir(), lanes=1, max_batch_size=1, max_queue_items=8)
        service, gate = await gated_service(settings)
        batcher = service.models["sentiment"].batcher
        app = create_app(settings, service)

        connections: list[Connection] = []

        async def call(*texts: str) -> list[Message]:
            connections.append(Connection(hooked))
            return await connections[-1].post(app, "/predict", {"texts": list(texts)})

        def watchers() -> list[asyncio.Task[object]]:
            return [t for t in asyncio.all_tasks() if "_disconnect" in repr(t.get_coro())]

        gc.collect()
        gc.disable()
        try:
            # Two batches wait at the gate (lanes + 1) and 8 texts fill the queue; the
            # requests run past the 50 ms after which a disconnect watcher starts.
            held = [asyncio.ensure_future(call(f"held request {i}")) for i in range(2)]
            await asyncio.sleep(0.05)
            held.append(asyncio.ensure_future(call(*(f"queued {i}" for i in range(8)))))
            await asyncio.sleep(0.15)
            assert batcher.queue_depth == 8, "the queue is not full"
            if hooked:
                registered = [c for c in connections if c.registered]
                assert watchers() == [] and len(registered) == 3, "each held request is hooked"
            else:
                assert len(watchers()) == 3, "each held request has a disconnect watcher"
            for _ in range(50):
                answer = app.early_refusal(b"POST", b"/predict", [(b"host", b"test")])
                assert answer is not None and answer[0] == 429
            gate.set()
            for sent in await asyncio.gather(*held):
                assert sent[0]["status"] == 200
            await asyncio.sleep(0.01)  # the watchers see the response complete and end
            assert watchers() == [], "a disconnect watcher outlived its request"
            left = [c.registered for c in connections if c.registered]
            assert left == [], "a request left its disconnect callback registered"
            assert gc.collect() == 0, "the request path left objects in reference cycles"
        finally:
            gc.enable()
            await service.close(grace=5)

    asyncio.run(scenario())


def test_deadlines_passing_in_the_queue_or_in_a_batch_leave_no_cyclic_garbage() -> None:
    """A 504 raised into the waiting handler must not tie its frames to the error."""

    async def scenario() -> None:
        settings = Settings(model_dir=model_dir(), lanes=1, max_batch_size=1)
        service, gate = await gated_service(settings)
        app = create_app(settings, service)
        hurried = [(b"x-request-timeout", b"0.1")]

        async def call(i: int) -> list[Message]:
            body = {"text": f"text {i}"} if i % 2 else {"texts": [f"text {i}", "and another"]}
            return await Connection(True).post(app, "/predict", body, hurried)

        gc.collect()
        gc.disable()
        try:
            # Two batches of one take the lane and its waiting place; the rest queue. All
            # expire, in their (held) batches or in the queue; one text or several a request.
            calls = [asyncio.ensure_future(call(i)) for i in range(6)]
            for sent in await asyncio.gather(*calls):
                assert sent[0]["status"] == 504
            gate.set()
            await asyncio.sleep(0.2)  # the held batches end; their results are dropped
            assert gc.collect() == 0, "a 504 left objects in reference cycles"
        finally:
            gc.enable()
            await service.close(grace=5)

    asyncio.run(scenario())
