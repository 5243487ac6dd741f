"""OpenAI chat and text completions, relayed upstream: ``POST /v1/chat/completions`` and
``POST /v1/completions``. The models config names the chat models and their upstreams
(docs/engines.md); the request's ``model`` picks one.

inferline checks what it needs (a JSON object, ``model``, ``stream``, ``messages`` or
``prompt``), puts the upstream's model name in ``model`` and passes the rest on as parsed
(JSON re-encoded: the same values, though a number past a double's range or precision may be
written differently). With ``stream: true`` the upstream's server-sent events go to the
client chunk by chunk, as they come; the next chunk is read from the upstream only once the
client has taken the last one (uvicorn's ``send`` waits while the socket's buffer is full),
so a slow client slows the upstream instead of filling memory. A client that goes away
cancels the upstream request: its connection is closed. ``X-Request-Timeout`` bounds the
wait for the upstream's answer to start (504 past it), within the model's ``timeout_s``.

Upstream errors. Before the first byte goes to the client, connection failures, 429 (after
its Retry-After, within the timeout) and 502/503/504 are retried with jittered backoff
(``engines/openai.py``). What still fails is passed on: 4xx with the upstream's error in
OpenAI's shape (429 with its Retry-After), except 401/403, which become 502 since the key at
fault is inferline's; 503 and 504 as they are, any other 5xx as 502, with inferline's own
message (the upstream's is logged: it may name internals). A status that is neither a
success nor an error (a redirect, 204), an empty body or one that is not JSON, is 502. A
stream that breaks after its first byte ends with an error event, ``data: {"error":
{...}}``, as OpenAI's own do. An upstream that answers ``stream: true`` with one JSON body
is relayed as that body, and a stream of another type as it comes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import orjson

from inferline.api.app import Route
from inferline.api.http import JSON_TYPE, Request, Send, send_bytes
from inferline.api.openai import RequestError, error_body
from inferline.api.openapi_schemas import timeout_header
from inferline.api.validation import requested_timeout
from inferline.engines import sse
from inferline.errors import EngineError, InferlineError, UpstreamError
from inferline.service import Service
from inferline.telemetry import context
from inferline.types import ChatReply

log = logging.getLogger(__name__)

JSON_CHECK_BYTES = 256 * 1024  # larger answers are checked for their ends only
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
    seconds = requested_timeout(request, service.settings)
    deadline = None if seconds is None else time.monotonic() + seconds
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
        async with engine.open(path, body, deadline) as reply:
            if body.get("stream") is True and not _json(_media(reply)):
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


def _media(reply: ChatReply) -> bytes:
    """The reply's media type, in lower case, without parameters; empty when not given."""
    return reply.content_type.split(b";", 1)[0].strip().lower()


def _json(media: bytes) -> bool:
    return media == b"application/json" or media.endswith(b"+json")


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
    """Server-sent events, event by event; another streamed type (NDJSON, say) as it comes,
    under its own type."""
    events = _media(reply) in (b"", b"text/event-stream")
    headers = SSE_HEADERS if events else [(b"content-type", reply.content_type)]
    chunks = reply.chunks()
    try:  # the status goes out with the first bytes: until then a failure is still a 502
        first = await anext(chunks)
    except StopAsyncIteration:
        raise UpstreamError(
            502, b"", None, f"{reply.upstream} answered {reply.status} with an empty stream"
        ) from None
    except EngineError as exc:
        raise UpstreamError(502, b"", None, str(exc)) from exc
    await send({"type": "http.response.start", "status": reply.status, "headers": headers})
    held = bytearray()  # the start of an event whose end has not come
    ended = True  # what was sent ends at an event's end
    try:
        chunk: bytes | None = first
        while chunk is not None:
            body = sse.complete(held, chunk) if events else chunk
            if body:
                ended = body.endswith((b"\n\n", b"\r\n\r\n"))
                await send({"type": "http.response.body", "body": body, "more_body": True})
            chunk = await anext(chunks, None)
    except InferlineError as exc:
        log.warning("upstream stream failed after its start: %s", exc)
        state["done"] = True
        if not events:  # no way to say so in another format: the body ends where it broke
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        # A half event is dropped, so the client's parser sees whole events, then the error.
        event = orjson.dumps(error_body(502, f"the upstream failed: {exc}", None))
        closing = b"" if ended else b"\n\n"  # an event over sse.MAX_EVENT went out in part
        await send({"type": "http.response.body", "body": closing + b"data: " + event + b"\n\n"})
        return
    state["done"] = True
    await send({"type": "http.response.body", "body": bytes(held), "more_body": False})


async def _whole(reply: ChatReply, send: Send, state: dict[str, bool]) -> None:
    try:
        content = b"".join([chunk async for chunk in reply.chunks()])
    except EngineError as exc:
        raise UpstreamError(502, b"", None, str(exc)) from exc
    content_type = reply.content_type or b"application/json"
    media = _media(reply)
    if not content.strip() or ((not media or _json(media)) and not _whole_json(content)):
        raise UpstreamError(
            502, content, None, f"{reply.upstream} answered {reply.status} with no valid answer"
        )
    state["done"] = True
    await send_bytes(send, reply.status, content, [(b"content-type", content_type)])


def _whole_json(content: bytes) -> bool:
    """Whether ``content`` is a JSON value: parsed when small; a large one (an answer with
    log-probabilities can be megabytes, and parsing holds the event loop) is checked for
    its ends only, which catches a body cut short."""
    if len(content) <= JSON_CHECK_BYTES:
        try:
            orjson.loads(content)
        except orjson.JSONDecodeError:
            return False
        return True
    ends = content.strip()
    return (ends[:1], ends[-1:]) in ((b"{", b"}"), (b"[", b"]"))


def _refusal(status: int) -> str | None:
    """The refusal reason of an upstream answer passed on, or None for a failure."""
    if status == 429:
        return "upstream"
    if status in (503, 504):
        return "unavailable" if status == 503 else "deadline"
    return "invalid" if 400 <= status < 500 and status not in (401, 403) else None


async def _pass_on(send: Send, exc: UpstreamError) -> None:
    status, message = exc.status, str(exc)
    passed = _error_object(exc.body, status) if status < 500 else None
    if status in (401, 403):
        log.error("%s: the upstream refused inferline's API key", message)
        status, passed = 502, None
        message = "the upstream refused inferline's credentials; see the server log"
    elif status >= 500:
        if exc.body:  # an upstream's own 5xx text may name its internals: logged, not passed
            log.warning("%s: %s", message, exc.body[:500].decode("utf-8", "replace"))
        if status not in (503, 504):
            status = 502
    headers: list[tuple[bytes, bytes]] = [JSON_TYPE]
    if exc.retry_after is not None and status in (429, 503):
        headers.append((b"retry-after", str(max(1, round(exc.retry_after))).encode()))
    payload = orjson.dumps(passed or error_body(status, message, None))
    await send_bytes(send, status, payload, headers)


def _error_object(body: bytes, status: int) -> dict[str, Any] | None:
    """The upstream's error in OpenAI's shape (``error``: message, type, param, code), from
    OpenAI's own, vLLM's older top-level one or TGI's string; None when it has no message."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(value, dict):
        return None
    error = value.get("error", value)  # older vLLM: the fields at the top level
    if isinstance(error, str):  # TGI
        error = {"message": error, "type": value.get("error_type")}
    if not isinstance(error, dict) or not isinstance(error.get("message"), str):
        return None
    kind = error.get("type")
    default = "rate_limit_error" if status == 429 else "invalid_request_error"
    return {
        "error": {
            **{k: v for k, v in error.items() if k != "object"},
            "type": kind if isinstance(kind, str) and kind else default,
            "param": error.get("param"),
            "code": error.get("code"),
        }
    }


def _check(body: Any, field: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise RequestError("the body must be a JSON object")
    if not isinstance(body.get("model"), str):
        raise RequestError("'model' is required: a model id, a string", "model")
    if not isinstance(body.get("stream", False), bool | None):
        raise RequestError("'stream' must be a boolean", "stream")
    value = body.get(field)
    if field == "messages" and not (
        isinstance(value, list) and value and all(isinstance(m, dict) for m in value)
    ):
        raise RequestError("'messages' is required: a non-empty list of message objects", field)
    if field == "prompt" and not isinstance(value, str | list):
        raise RequestError("'prompt' is required: a string or a list", field)
    return body


TIMEOUT = timeout_header(
    "Seconds to wait for the upstream's answer to start (at most ten times the server's "
    "default, and the model's timeout_s); past it, 504."
)


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

    passed = {
        "description": "Another refusal of the upstream's, passed on in OpenAI's shape",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/OpenAIError"}}},
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
                "parameters": [TIMEOUT],
                "requestBody": body,
                "responses": {"200": ok, "4XX": passed},
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
