"""Small pure-ASGI helpers: read a bounded body, parse JSON, send JSON."""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from inferline.api.coding import inflate
from inferline.api.framing import byte_count
from inferline.errors import InvalidInput, PayloadTooLarge

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

JSON_TYPE = (b"content-type", b"application/json")
WATCH_AFTER = 0.05  # seconds
# A scope key: ``hook(callback)`` has the server call ``callback()`` if the connection is
# lost, ``hook(callback, remove=True)`` takes it back (api/wire.py provides it).
ON_DISCONNECT = "inferline.on_disconnect"
DUMP_OPTIONS = orjson.OPT_SERIALIZE_NUMPY
INFLATE_INLINE_BYTES = 65536  # larger compressed bodies inflate off the event loop


class ClientGone(Exception):
    """The client went away before its body was whole: nothing to answer, and no refusal
    (the request counts as 499, as a disconnect after the body does)."""


@dataclass(slots=True)
class Request:
    scope: Scope
    receive: Receive
    max_body: int
    path_params: dict[str, str] = field(default_factory=dict)
    responding: bool = False  # the response has started: a disconnect no longer cancels
    status: int = 0  # of the response, once started
    disconnected: bool = False
    watcher: asyncio.Task[None] | asyncio.TimerHandle | Callable[[], None] | None = None

    @property
    def method(self) -> str:
        return str(self.scope["method"])

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.scope["headers"]:
            if key == name:
                return bytes(value)
        return None

    async def body(self) -> bytes:
        declared = byte_count(self.header(b"content-length") or b"")
        if declared is not None and declared > self.max_body:
            raise PayloadTooLarge(f"the body is over the limit of {self.max_body} bytes")
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                self.disconnected = True
                raise ClientGone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                raise PayloadTooLarge(f"the body is over the limit of {self.max_body} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                self._watch_disconnect()
                body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                coding = self.header(b"content-encoding")
                if coding is None:
                    return body
                if len(body) <= INFLATE_INLINE_BYTES:
                    return inflate(body, coding, self.max_body)
                return await asyncio.to_thread(inflate, body, coding, self.max_body)

    def _watch_disconnect(self) -> None:
        """Once the body is read, a client that goes away cancels the handler, and with it
        the request's queued texts: the model never runs them.

        Under inferline's own protocol (api/wire.py) the connection says when it is lost,
        which costs nothing per request. Elsewhere a watcher task waits for uvicorn's
        http.disconnect; it starts only if the request is still running after WATCH_AFTER,
        since a task per request cost ~5% of throughput, and a request that finishes sooner
        has nothing left to cancel."""
        handler = asyncio.current_task()
        if handler is None or self.watcher is not None:
            return
        hook = self.scope.get(ON_DISCONNECT)
        if hook is not None:
            self.watcher = functools.partial(self._gone, handler)
            hook(self.watcher)
            return
        loop = asyncio.get_running_loop()
        self.watcher = loop.call_later(WATCH_AFTER, self._start_watcher, handler)

    def _start_watcher(self, handler: asyncio.Task[Any]) -> None:
        if not self.responding:
            self.watcher = asyncio.get_running_loop().create_task(self._disconnect(handler))

    def stop_watching(self) -> None:
        # A watcher that has started ends by itself: uvicorn wakes its receive() once the
        # response is complete or the client has gone. Cancelling it instead left a
        # CancelledError, its traceback and the task in a reference cycle, one per request
        # still running after WATCH_AFTER: under overload that was most of the collector's
        # work, and its full collections held the loop for 20 to 35 ms.
        watcher = self.watcher
        if isinstance(watcher, asyncio.TimerHandle):
            watcher.cancel()
        elif isinstance(watcher, functools.partial):
            self.scope[ON_DISCONNECT](watcher, remove=True)
            self.watcher = None  # it refers to this request: no cycle left behind

    def _gone(self, handler: asyncio.Task[Any]) -> None:
        if not self.responding:
            self.disconnected = True
            handler.cancel()

    async def _disconnect(self, handler: asyncio.Task[Any]) -> None:
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                self._gone(handler)
                return

    async def json(self) -> Any:
        body = await self.body()
        if not body:
            raise InvalidInput("the body is empty; send a JSON object", status=400)
        return parse_json(body)


def parse_json(data: bytes | memoryview) -> Any:
    """The JSON value of ``data``; InvalidInput (400) when it is not valid JSON, or when an
    object repeats a key: parsers disagree on which one wins, so a proxy in front could check
    one value while the model gets the other.

    orjson parses (and bounds the depth at 1024); the C scanner of the json module then looks
    for repeated keys only: about 1 µs more for a one-text request, 3 µs for 16 texts, and
    about as long again as orjson for the largest bodies."""
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"the body is not valid JSON: {exc}", status=400) from None
    if isinstance(value, dict | list):  # a scalar has no keys
        try:
            _KEYS_CHECK.decode(bytes(data).decode())  # valid UTF-8: orjson said so
        except RecursionError:  # orjson goes a little deeper than the json module
            raise InvalidInput(
                "the body is not valid JSON: nested too deeply", status=400
            ) from None
    return value


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise InvalidInput(
                    f"the body is not valid JSON: the key {key!r} appears more than once",
                    status=400,
                )
            seen.add(key)
    return obj


_KEYS_CHECK = json.JSONDecoder(object_pairs_hook=_unique_keys)  # made once: ~3x faster


async def send_json(
    send: Send,
    status: int,
    payload: Any,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    body = orjson.dumps(payload, option=DUMP_OPTIONS)
    await send_bytes(send, status, body, [JSON_TYPE, *(headers or [])])


async def send_bytes(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*headers, (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
