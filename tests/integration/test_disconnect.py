"""A client that goes away cancels its queued texts: the model never runs them."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import orjson

from inferline.api.factory import create_app
from inferline.api.http import Message
from inferline.config import Settings
from inferline.service import Service
from inferline.types import FloatArray, Item
from tests.conftest import model_dir


def test_disconnect_cancels_queued_texts() -> None:
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

        async def call(text: str, leave: asyncio.Event | None) -> list[Message]:
            body = orjson.dumps({"text": text})
            sent: list[Message] = []
            first = True

            async def receive() -> Message:
                nonlocal first
                if first:
                    first = False
                    return {"type": "http.request", "body": body, "more_body": False}
                await (leave or asyncio.Event()).wait()
                return {"type": "http.disconnect"}

            async def send(message: Message) -> None:
                sent.append(message)

            scope = {"type": "http", "method": "POST", "path": "/predict", "headers": []}
            await app(scope, receive, send)
            return sent

        # lanes=1 lets two batches be in flight; both hold at the gate.
        running = [asyncio.ensure_future(call(f"holding the lane {i}", None)) for i in range(2)]
        await asyncio.sleep(0.1)
        leave = asyncio.Event()
        victim = asyncio.ensure_future(call("a client who will hang up " * 3, leave))
        await asyncio.sleep(0.05)
        assert batcher.queue_depth == 1
        leave.set()
        assert await victim == []  # no response: the client is gone
        assert batcher.queue_depth == 0
        gate.set()
        for done in await asyncio.gather(*running):
            assert done[0]["status"] == 200
        assert len(seen) == 2  # the victim's text never reached the engine
        await service.close(grace=5)

    asyncio.run(scenario())
