"""OpenAI chat and text completions, relayed upstream: ``POST /v1/chat/completions`` and
``POST /v1/completions``. The models config names the chat models and their upstreams
(docs/engines.md); the request's ``model`` picks one.

inferline checks what it needs (a JSON object, ``model``, ``stream``, ``messages`` or
``prompt``), puts the upstream's model name in ``model`` and passes the rest on unchanged.
With ``stream: true`` the upstream's server-sent events go to the client chunk by chunk, as
they come; the next chunk is read from the upstream only once the client has taken the last
one (uvicorn's ``send`` waits while the socket's buffer is full), so a slow client slows
the upstream instead of filling memory. A client that goes away cancels the upstream request:
its connection is closed.

Upstream errors. Before the first byte goes to the client, connection failures, 429 (after
its Retry-After, within the timeout) and 502/503/504 are retried with jittered backoff
(``engines/openai.py``). What still fails is passed on: 4xx as the upstream sent it (429
with its Retry-After), except 401/403, which become 502 since the key at fault is
inferline's; 503 and 504 as they are; any other 5xx as 502. A stream that breaks after its
first byte ends with an error event, ``data: {"error": {...}}``, as OpenAI's own do.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson

from inferline.api.app import Route
from inferline.api.http import JSON_TYPE, Request, Send, send_bytes
from inferline.api.openai import RequestError, error_body
from inferline.engines import sse
from inferline.errors import EngineError, InferlineError, UpstreamError
from inferline.service import Service
from inferline.telemetry import context
from inferline.types import ChatReply

log = logging.getLogger(__name__)

SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),  # nginx and ingress controllers: do not buffer
]


def routes(service: Service) -> list[Route]:
    async def chat(request: Request, send: Send) -> None:
        await relay(service, request, send, "/chat/completions", "messages")

    async def completions(request: Request, send: Send) -> None:
        await relay(service, request, send, "/completions", "prompt")

    return [
        Route("POST", "/v1/chat/completions", chat, error_body, protocol="openai"),
        Route("POST", "/v1/completions", completions, error_body, protocol="openai"),
    ]


async def relay(service: Service, request: Request, send: Send, path: str, field: str) -> None:
    body = _check(await request.json(), field)
    engine = service.chat(body["model"])
    record = context.current()
    if record is not None:  # the request's metrics and access log name the model
        record.model = body["model"]
    # The request's own watcher cancels only before the response starts; a stream needs
    # one that lasts until its end.
    request.stop_watching()
    handler = asyncio.current_task()
    assert handler is not None
    state = {"done": False}
    watcher = asyncio.get_running_loop().create_task(_watch(request, handler, state))
    try:
        async with engine.open(path, body) as reply:
            if body.get("stream") is True:
                await _stream(reply, send, state)
            else:
                await _whole(reply, send, state)
    except UpstreamError as exc:
        reason = _refusal(exc.status)
        if reason is not None:  # counted as the app counts its own refusals
            service.metrics.reject(reason)
        await _pass_on(send, exc)
    finally:
        state["done"] = True
        watcher.cancel()


async def _watch(request: Request, handler: asyncio.Task[Any], state: dict[str, bool]) -> None:
    """Cancel the handler (and with it the upstream request) when the client goes away."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            if not state["done"]:  # uvicorn also says so once the response is complete
                request.disconnected = True
                handler.cancel()
            return


async def _stream(reply: ChatReply, send: Send, state: dict[str, bool]) -> None:
    headers = SSE_HEADERS
    events = not reply.content_type or reply.content_type.startswith(b"text/event-stream")
    if not events:
        headers = [(b"content-type", reply.content_type)]  # the upstream did not stream
    await send({"type": "http.response.start", "status": reply.status, "headers": headers})
    held = bytearray()  # the start of an event whose end has not come
    ended = True  # what was sent ends at an event's end
    try:
        async for chunk in reply.chunks():
            body = sse.complete(held, chunk) if events else chunk
            if body:
                ended = body.endswith((b"\n\n", b"\r\n\r\n"))
                await send({"type": "http.response.body", "body": body, "more_body": True})
    except InferlineError as exc:
        log.warning("upstream stream failed after its start: %s", exc)
        # A half event is dropped, so the client's parser sees whole events, then the error.
        event = orjson.dumps(error_body(502, f"the upstream failed: {exc}", None))
        closing = b"" if ended else b"\n\n"  # an event over sse.MAX_EVENT went out in part
        await send({"type": "http.response.body", "body": closing + b"data: " + event + b"\n\n"})
        state["done"] = True
        return
    state["done"] = True
    await send({"type": "http.response.body", "body": bytes(held), "more_body": False})


async def _whole(reply: ChatReply, send: Send, state: dict[str, bool]) -> None:
    try:
        content = b"".join([chunk async for chunk in reply.chunks()])
    except EngineError as exc:
        raise UpstreamError(502, b"", None, str(exc)) from exc
    state["done"] = True
    content_type = reply.content_type or b"application/json"
    await send_bytes(send, reply.status, content, [(b"content-type", content_type)])


def _refusal(status: int) -> str | None:
    """The refusal reason of an upstream answer passed on, or None for a failure."""
    if status == 429:
        return "upstream"
    if status in (503, 504):
        return "unavailable" if status == 503 else "deadline"
    return "invalid" if 400 <= status < 500 and status not in (401, 403) else None


async def _pass_on(send: Send, exc: UpstreamError) -> None:
    status, message = exc.status, str(exc)
    passed = _error_object(exc.body)
    if status in (401, 403):
        log.error("%s: the upstream refused inferline's API key", message)
        status, passed = 502, None
        message = "the upstream refused inferline's credentials; see the server log"
    elif status >= 500 and status not in (503, 504):
        status = 502
    headers: list[tuple[bytes, bytes]] = [JSON_TYPE]
    if exc.retry_after is not None and status in (429, 503):
        headers.append((b"retry-after", str(max(1, round(exc.retry_after))).encode()))
    payload = passed or orjson.dumps(error_body(status, message, None))
    await send_bytes(send, status, payload, headers)


def _error_object(body: bytes) -> bytes | None:
    """The upstream's body when it is an OpenAI error object, else None."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if isinstance(value, dict) and isinstance(value.get("error"), dict):
        return body
    return None


def _check(body: Any, field: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise RequestError("the body must be a JSON object")
    if not isinstance(body.get("model"), str):
        raise RequestError("'model' is required: a model id, a string", "model")
    if not isinstance(body.get("stream", False), bool | None):
        raise RequestError("'stream' must be a boolean", "stream")
    value = body.get(field)
    if field == "messages" and not (isinstance(value, list) and value):
        raise RequestError("'messages' is required: a non-empty list of messages", field)
    if field == "prompt" and not isinstance(value, str | list):
        raise RequestError("'prompt' is required: a string or a list", field)
    return body


def openapi_paths() -> dict[str, Any]:
    """The two routes for the OpenAPI document (``api/openapi.py`` adds the error answers).
    The bodies are open: every field but those checked goes upstream as it is."""
    ok = {
        "description": "The upstream's answer: a JSON object, or server-sent events when "
        "'stream' is true",
        "content": {
            "application/json": {"schema": {"type": "object"}},
            "text/event-stream": {"schema": {"type": "string"}},
        },
    }

    def operation(summary: str, field: str, schema: dict[str, Any]) -> dict[str, Any]:
        request = {
            "type": "object",
            "properties": {
                "model": {
                    "type": "string",
                    "description": "A chat model of the models config; any other is 404",
                },
                field: schema,
                "stream": {"type": ["boolean", "null"]},
            },
            "required": ["model", field],
        }
        body = {"required": True, "content": {"application/json": {"schema": request}}}
        return {
            "post": {
                "summary": summary,
                "requestBody": body,
                "responses": {"200": ok},
                "x-errors": (400, 404, 413, 429, 502, 503, 504),
            }
        }

    messages = {"type": "array", "minItems": 1, "items": {"type": "object"}}
    return {
        "/v1/chat/completions": operation(
            "Chat completions, relayed to the model's upstream", "messages", messages
        ),
        "/v1/completions": operation(
            "Text completions, relayed to the model's upstream",
            "prompt",
            {"type": ["string", "array"]},
        ),
    }
