"""A real HTTP server that speaks the OpenAI wire format, for the OpenAIEngine tests.

A pure ASGI app on uvicorn, in a thread of the test process: ``GET /v1/models``,
``POST /v1/embeddings`` (deterministic vectors, float or base64) and ``POST
/v1/chat/completions`` / ``/v1/completions``, streamed as server-sent events or not. The
last message's text (chat) or the prompt (completions) picks a behaviour: ``rate-limited``
(429, Retry-After 0), ``rate-limited-long`` (429, Retry-After 120), ``flaky`` (503 on the
first try), ``broken`` (500), ``bad`` (400), ``endless`` (a stream that never ends), ``flood``
(64 KiB events as fast as the reader takes them), ``slow-<seconds>`` (waits, then answers),
and answers that are not OpenAI's: ``redirect`` (301), ``no-content`` (204), ``not-json``
(200 with a cut JSON body), ``json-for-stream`` (one JSON body for ``stream: true``),
``vllm-error`` (older vLLM's top-level error, 400), ``tgi-error`` (TGI's string error,
422), ``empty-text`` (200, empty, text/plain), ``ndjson`` and ``ndjson-cut`` (a stream of
another type, whole or broken), ``big`` and ``big-cut`` (300 KB of JSON, whole or cut);
anything else gets ``REPLY``.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
import uvicorn

from inferline.api.http import Message, Receive, Scope, Send
from tests.conftest import free_port

REPLY = ["The", " battery", " lasts", " all", " day", "."]
DIM = 384
FLOOD_EVENT = b"data: " + b"x" * (64 * 1024 - 8) + b"\n\n"
FLOOD_LIMIT = 400 * 1024 * 1024


def vector(text: str) -> np.ndarray[Any, np.dtype[np.float32]]:
    """The fake embedding of ``text``: fixed by the text, unit length."""
    rng = np.random.default_rng(sum(text.encode()) + len(text))
    v = rng.standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


@dataclass
class FakeOpenAI:
    requests: list[tuple[str, dict[str, str], Any]] = field(default_factory=list)
    attempts: collections.Counter[str] = field(default_factory=collections.Counter)
    disconnected: threading.Event = field(default_factory=threading.Event)
    flood_sent: int = 0
    abandoned: collections.Counter[str] = field(default_factory=collections.Counter)
    url: str = ""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        raw = b"".join(chunks)
        body = orjson.loads(raw) if raw else None
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        path = scope["path"]
        self.requests.append((path, headers, body))
        if path == "/v1/models":
            await _json(send, 200, {"object": "list", "data": [{"id": "upstream-chat"}]})
        elif path == "/v1/embeddings":
            await self.embeddings(receive, send, body)
        elif path in ("/v1/chat/completions", "/v1/completions"):
            await self.generate(receive, send, body, chat=path.endswith("chat/completions"))
        else:
            await _json(send, 404, _error("no such path", "not_found"))

    async def embeddings(self, receive: Receive, send: Send, body: Any) -> None:
        first = body["input"][0]
        if await abandoned_while_slow(first, receive):
            self.abandoned[first] += 1
            return
        data = []
        for i, text in enumerate(body["input"]):
            v = vector(text)
            value: Any = v.tolist()
            if body.get("encoding_format") == "base64":
                value = base64.b64encode(v.astype("<f4").tobytes()).decode()
            data.append({"object": "embedding", "index": i, "embedding": value})
        data.reverse()  # the index, not the order, says which text a vector belongs to
        usage = {"prompt_tokens": 3, "total_tokens": 3}
        await _json(
            send, 200, {"object": "list", "data": data, "model": body["model"], "usage": usage}
        )

    async def generate(self, receive: Receive, send: Send, body: Any, *, chat: bool) -> None:
        prompt = body["messages"][-1]["content"] if chat else str(body["prompt"])
        self.attempts[prompt] += 1
        if prompt == "rate-limited":
            await _json(send, 429, _error("Rate limit reached", "rate_limit_exceeded"), b"0")
        elif prompt == "rate-limited-long":
            await _json(send, 429, _error("Rate limit reached", "rate_limit_exceeded"), b"120")
        elif prompt == "flaky" and self.attempts[prompt] == 1:
            await _json(send, 503, _error("The engine is currently overloaded", None))
        elif prompt == "broken":
            await _json(send, 500, _error("The server had an error", None))
        elif prompt == "bad":
            await _json(send, 400, _error("'temperature' is too high", "invalid_value"))
        elif prompt == "ndjson-cut":  # a stream in another format, broken after a line
            headers = NDJSON
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            first = b'{"n": 1}\n'
            await send({"type": "http.response.body", "body": first, "more_body": True})
            await asyncio.sleep(0.05)
            raise ConnectionAbortedError("the fake upstream drops the stream")
        elif prompt in ODD:
            status, headers, content = ODD[prompt]
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": content})
        elif await abandoned_while_slow(prompt, receive):
            self.abandoned[prompt] += 1
        elif not body.get("stream") or prompt == "json-for-stream":
            await _json(send, 200, _completion(body["model"], chat))
        else:
            await _start(send)
            await self.stream(receive, send, body["model"], chat, prompt)

    async def stream(
        self, receive: Receive, send: Send, model: str, chat: bool, prompt: str
    ) -> None:
        if prompt == "endless":
            await self.endless(receive, send, model, chat)
        elif prompt == "flood":
            await self.flood(receive, send)
        elif prompt == "cut":  # one event and half of the next, then the connection drops
            await _event(send, _chunk(model, chat, "Half", 0))
            half = b'data: {"choices": [{"index": 0, "del'
            await send({"type": "http.response.body", "body": half, "more_body": True})
            await asyncio.sleep(0.05)  # so that the gateway has it before the drop
            raise ConnectionAbortedError("the fake upstream drops the stream")
        else:
            if prompt == "huge":  # an event over sse.MAX_EVENT, then the usual
                await _event(send, b'{"pad": "' + b"x" * 65536 * 40 + b'"}')
            for i, word in enumerate(REPLY):
                await _event(send, _chunk(model, chat, word, i))
                await asyncio.sleep(0.005)  # tokens come one by one
            await _event(send, b"[DONE]")
            await send({"type": "http.response.body", "body": b""})

    async def endless(self, receive: Receive, send: Send, model: str, chat: bool) -> None:
        watcher = asyncio.create_task(self._watch(receive))
        i = 0
        while not watcher.done():
            await _event(send, _chunk(model, chat, f" word{i}", i))
            i += 1
            await asyncio.sleep(0.02)

    async def flood(self, receive: Receive, send: Send) -> None:
        watcher = asyncio.create_task(self._watch(receive))
        while not watcher.done() and self.flood_sent < FLOOD_LIMIT:
            await send({"type": "http.response.body", "body": FLOOD_EVENT, "more_body": True})
            self.flood_sent += len(FLOOD_EVENT)
            # Once the reader has gone, uvicorn's send drops the data without yielding, and
            # this loop would count the whole limit as sent before the watcher could run.
            await asyncio.sleep(0)
        if not watcher.done():
            await send({"type": "http.response.body", "body": b""})
        watcher.cancel()

    async def _watch(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        self.disconnected.set()


async def abandoned_while_slow(text: str, receive: Receive) -> bool:
    """For a text ``slow-<seconds>``: wait that long before answering, and say whether the
    client hung up meanwhile (then there is nobody to answer)."""
    if not text.startswith("slow-"):
        return False
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(float(text.split("-")[1])):
            return bool((await receive())["type"] == "http.disconnect")
    return False


JSON = [(b"content-type", b"application/json")]
NDJSON = [(b"content-type", b"application/x-ndjson")]
ODD: dict[str, tuple[int, list[tuple[bytes, bytes]], bytes]] = {
    "redirect": (301, [*JSON, (b"location", b"http://10.9.9.9/v1/chat/completions")], b""),
    "no-content": (204, [], b""),
    "not-json": (200, JSON, b'{"id": "x", "choices": ['),
    "vllm-error": (
        400,
        JSON,
        b'{"object": "error", "message": "max_tokens is too large", "type": "BadRequestError",'
        b' "param": null, "code": 400}',
    ),
    "tgi-error": (422, JSON, b'{"error": "Input validation error", "error_type": "validation"}'),
    "empty-text": (200, [(b"content-type", b"text/plain")], b""),
    "ndjson": (200, NDJSON, b'{"n": 1}\n{"n": 2}\n'),
    "big": (200, JSON, b'{"pad": "' + b"x" * 300_000 + b'"}'),
    "big-cut": (200, JSON, b'{"pad": "' + b"x" * 300_000),
}


def _error(message: str, code: str | None) -> dict[str, Any]:
    return {
        "error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}
    }


def _chunk(model: str, chat: bool, text: str, i: int) -> bytes:
    choice: dict[str, Any] = {"index": 0, "finish_reason": None}
    if chat:
        choice["delta"] = {"role": "assistant", "content": text} if i == 0 else {"content": text}
    else:
        choice["text"] = text
    kind = "chat.completion.chunk" if chat else "text_completion"
    return orjson.dumps(
        {"id": "x-1", "object": kind, "created": 1, "model": model, "choices": [choice]}
    )


def _completion(model: str, chat: bool) -> dict[str, Any]:
    text = "".join(REPLY)
    choice: dict[str, Any] = {"index": 0, "finish_reason": "stop"}
    if chat:
        choice["message"] = {"role": "assistant", "content": text}
    else:
        choice["text"] = text
    return {
        "id": "x-1",
        "object": "chat.completion" if chat else "text_completion",
        "created": 1,
        "model": model,
        "choices": [choice],
        "usage": {"prompt_tokens": 9, "completion_tokens": len(REPLY), "total_tokens": 15},
    }


async def _json(send: Send, status: int, payload: Any, retry_after: bytes | None = None) -> None:
    headers = [(b"content-type", b"application/json")]
    if retry_after is not None:
        headers.append((b"retry-after", retry_after))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": orjson.dumps(payload)})


async def _start(send: Send) -> None:
    headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})


async def _event(send: Send, data: bytes) -> None:
    message: Message = {"type": "http.response.body", "body": b"data: " + data + b"\n\n"}
    message["more_body"] = True
    await send(message)


class Running:
    """The fake on uvicorn in a thread; ``stop()`` ends it."""

    def __init__(self, app: FakeOpenAI) -> None:
        port = free_port()
        self.app = app
        app.url = f"http://127.0.0.1:{port}/v1"
        config = uvicorn.Config(
            app, host="127.0.0.1", port=port, lifespan="off", log_level="warning", ws="none"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the fake OpenAI server did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
