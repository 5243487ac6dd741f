"""One in-process HTTP request to the ASGI app, as uvicorn would serve it, for tests that
need to control when the client goes away."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import orjson

from inferline.api.http import ON_DISCONNECT, Message


class Connection:
    """A request's connection. ``hooked``: the scope carries the ON_DISCONNECT hook, as under
    api/wire.py's protocol, and ``lose()`` calls what is registered there, as its
    connection_lost does. Otherwise ``lose()`` makes receive() answer http.disconnect, which
    a watcher task waits for. Once the response is complete, receive() answers that too."""

    def __init__(self, hooked: bool) -> None:
        self.hooked = hooked
        self.registered: list[Callable[[], None]] = []
        self.sent: list[Message] = []
        self._gone = asyncio.Event()

    def hook(self, callback: Callable[[], None], *, remove: bool = False) -> None:
        if remove:
            self.registered.remove(callback)
        else:
            self.registered.append(callback)

    def lose(self) -> None:
        if self.hooked:
            for callback in list(self.registered):
                callback()
        else:
            self._gone.set()

    async def post(
        self, app: Any, path: str, body: Any, headers: list[tuple[bytes, bytes]] | None = None
    ) -> list[Message]:
        messages = [{"type": "http.request", "body": orjson.dumps(body), "more_body": False}]

        async def receive() -> Message:
            if messages:
                return messages.pop()
            await self._gone.wait()
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            self.sent.append(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                self._gone.set()

        scope: dict[str, Any] = {
            "type": "http",
            "method": "POST",
            "path": path,
            "headers": headers or [],
        }
        if self.hooked:
            scope[ON_DISCONNECT] = self.hook
        await app(scope, receive, send)
        return self.sent
