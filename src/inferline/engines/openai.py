"""OpenAI-compatible upstreams (OpenAI, vLLM, Ollama, TGI, LiteLLM), over httpx.

:class:`OpenAIEngine` runs the ``embedding`` model's batches through ``POST /embeddings``.
:class:`OpenAIChat` relays ``/chat/completions`` and ``/completions`` requests, streamed or
not, and measures time to first token and output tokens per second of each stream.

Retries (jittered backoff, within ``timeout_s``): connection failures, 429 (after its
Retry-After) and 502/503/504; for the relay only before the first byte goes to the client.
A relayed request that still fails passes the upstream's answer through (see
``api/chat.py``). The API key goes in ``Authorization`` and nowhere else: not in logs, not
in errors, not in ``repr``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import numpy as np
import orjson

from inferline.engines.config import OpenAISpec, display
from inferline.engines.remote import (
    BadRequest,
    Breaker,
    ErrorLog,
    Monitor,
    Retry,
    call_deadline,
    default_headers,
    note_failure,
    quiet_httpx,
    retry_after,
    retrying,
    trace_headers,
    upstream_of,
)
from inferline.engines.sse import StreamMeter
from inferline.errors import (
    DeadlineExceeded,
    EngineError,
    Overloaded,
    Unavailable,
    UpstreamError,
)
from inferline.telemetry.metrics import Metrics
from inferline.types import EngineInfo, FloatArray, Item

RETRIED = (429, 502, 503, 504)
DOWN = (502, 503, 504)  # relayed answers that say the upstream is down (for the breaker)
UNEXPECTED = (*range(100, 200), 204, 205, *range(300, 400))
# The most an embeddings answer may take: each float as JSON text, generously (orjson's
# "-1.2345678901234567e-05" is 23 bytes; a separator, a space), each row's keys, and the
# envelope (model, usage). Base64 is smaller, but an upstream may answer floats anyway.
JSON_FLOAT_BYTES = 32
ROW_BYTES = 512
ENVELOPE_BYTES = 64 * 1024


class _Client:
    """One httpx client per upstream, its breaker and its health check."""

    def __init__(self, name: str, spec: OpenAISpec) -> None:
        self.name = name
        self.spec = spec
        self.remote = spec.remote_model or name
        self.where = display(spec.url)  # for logs; errors name the model instead
        self.upstream = upstream_of(name)
        self.breaker = Breaker(name, spec.url, spec.failure_threshold)
        self._headers = default_headers(spec)  # reads the key now: a missing one fails the load
        spec.tls_files()  # and the TLS files
        self.http: Any = None
        self._monitor: Monitor | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, {self.where!r})"

    @property
    def ready(self) -> bool:
        return not self.breaker.open

    async def start(self) -> None:
        import httpx

        quiet_httpx()
        spec = self.spec
        context = spec.ssl_context()
        self.http = httpx.AsyncClient(
            base_url=spec.url.rstrip("/"),
            verify=context if context is not None else True,
            headers={**self._headers, "accept-encoding": "identity"},  # SSE: no buffering
            http2=spec.http2,
            limits=httpx.Limits(
                max_connections=spec.max_connections,
                max_keepalive_connections=spec.max_connections,
            ),
            timeout=httpx.Timeout(spec.timeout_s, connect=spec.connect_timeout_s),
        )
        self._monitor = Monitor(self.breaker, self._health, spec.health_interval_s)
        await self._monitor.start()

    async def _health(self, seconds: float) -> None:
        response = await self.http.get(self.spec.health_path, timeout=seconds)
        if response.status_code != 200:
            raise Unavailable(f"{self.spec.health_path} answered {response.status_code}")

    async def send(
        self, path: str, body: dict[str, Any], deadline: float, *, stream: bool = False
    ) -> Any:
        """One attempt: the response, streamed and not yet read, when it is a success.

        A stream's reads may each take ``timeout_s`` (the wait for the next token); any
        other answer must come within the deadline."""
        import httpx

        if self.http is None:
            raise Unavailable(f"the engine of model {self.name!r} has not started")
        left = max(deadline - time.monotonic(), 0.001)
        request = self.http.build_request(
            "POST",
            path,
            content=orjson.dumps({**body, "model": self.remote}),
            headers={"content-type": "application/json", **trace_headers()},
            timeout=httpx.Timeout(
                self.spec.timeout_s if stream else left,
                connect=min(left, self.spec.connect_timeout_s),
            ),
        )
        try:
            async with asyncio.timeout(left):  # a stream's reads may be slower: not its head
                response = await self.http.send(request, stream=True)
        except (httpx.NetworkError, httpx.RemoteProtocolError, httpx.ConnectTimeout) as exc:
            raise Retry(Unavailable(f"{self.upstream}: {type(exc).__name__}")) from exc
        except (httpx.TimeoutException, TimeoutError) as exc:
            raise DeadlineExceeded(f"{self.upstream} did not answer in time") from exc
        status = response.status_code
        if status < 400 and status not in UNEXPECTED:
            return response
        content = await response.aread()
        await response.aclose()
        if status < 400:  # a redirect, or a success with no body: not an answer to relay
            raise UpstreamError(502, b"", None, f"{self.upstream} answered {status}")
        wait = retry_after(response.headers.get("retry-after"))
        error = UpstreamError(status, content, wait, f"{self.upstream} answered {status}")
        if status in RETRIED:
            raise Retry(error, wait)
        raise error

    async def close(self) -> None:
        if self._monitor is not None:
            await self._monitor.close()
        if self.http is not None:
            await self.http.aclose()


class OpenAIEngine(_Client):
    """The ``embedding`` model through an upstream's ``/embeddings``."""

    def __init__(self, name: str, spec: OpenAISpec, *, output_dim: int, max_tokens: int) -> None:
        super().__init__(name, spec)
        self._errors = ErrorLog(name, spec.url)
        self._info = EngineInfo(
            name=name,
            inputs=("text",),
            output="embedding",
            output_dim=spec.output_dim or output_dim,
            max_tokens=max_tokens,
            device=f"openai {self.where}",
            lanes=spec.concurrency,
            engine="openai",
            pads=False,
            sends_text=True,
        )

    @property
    def info(self) -> EngineInfo:
        return self._info

    async def infer(self, items: Sequence[Item]) -> Sequence[FloatArray | BaseException]:
        self.breaker.check()
        body: dict[str, Any] = {"input": [item.text for item in items]}
        if self.spec.encoding_format == "base64":  # float is the default: some servers
            body["encoding_format"] = "base64"  # refuse the field they do not know
        deadline, callers_bound = call_deadline(self.spec, items)
        try:
            data = await retrying(lambda deadline: self._embed(body, deadline), self.spec, deadline)
        except UpstreamError as exc:  # passed through on the relay; a batch maps it
            error = _batch_error(exc)
            note_failure(self.breaker, error, callers_bound)
            # what the upstream said: to the log (at most a line a second), not to clients
            raise error from self._errors.said(str(exc.status), _text(exc.body))
        except Exception as exc:
            note_failure(self.breaker, exc, callers_bound)
            raise
        self.breaker.success()
        return self._rows(data, len(items))

    async def _embed(self, body: dict[str, Any], deadline: float) -> Any:
        import httpx

        texts = len(body["input"])
        limit = texts * (self._info.output_dim * JSON_FLOAT_BYTES + ROW_BYTES) + ENVELOPE_BYTES
        too_large = EngineError(
            f"{self.upstream} answered over {limit} bytes, more than {texts} embeddings of "
            f"{self._info.output_dim} dimensions take (set output_dim)"
        )
        response = await self.send("/embeddings", body, deadline)
        chunks: list[bytes] = []
        try:
            length = response.headers.get("content-length", "")
            if length.isdigit() and int(length) > limit:
                raise too_large
            # send() bounds the head only: a body that drips must end at the deadline too.
            # Closing the response unread to its end closes its connection: a hang-up.
            async with asyncio.timeout(max(deadline - time.monotonic(), 0.0)):
                size = 0
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > limit:  # an answer of any size would be held whole otherwise
                        raise too_large
                    chunks.append(chunk)
        except (TimeoutError, httpx.TimeoutException) as exc:
            raise DeadlineExceeded(f"{self.upstream} did not answer in time") from exc
        finally:
            await response.aclose()
        content = b"".join(chunks)
        try:
            return orjson.loads(content)
        except orjson.JSONDecodeError as exc:
            raise EngineError(f"{self.upstream}: the answer is not JSON") from exc

    def _rows(self, answer: Any, count: int) -> list[FloatArray]:
        try:
            entries = sorted(answer["data"], key=lambda e: e["index"])
            indices = [entry["index"] for entry in entries]
            rows = []
            for entry in entries:
                vector = entry["embedding"]
                if isinstance(vector, str):  # base64 of little-endian float32
                    rows.append(np.frombuffer(base64.b64decode(vector), "<f4"))
                else:
                    with np.errstate(over="ignore"):  # past float32's range: inf, refused below
                        rows.append(np.asarray(vector, dtype=np.float32))
        except (KeyError, TypeError, ValueError) as exc:
            raise EngineError(f"{self.upstream}: not an embeddings answer ({exc})") from None
        dim = self._info.output_dim
        if len(rows) != count or any(row.shape != (dim,) for row in rows):
            raise EngineError(
                f"{self.upstream} gave {len(rows)} embeddings of "
                f"{rows[0].shape[0] if rows else 0} dimensions for {count} texts; "
                f"expected {dim} (set output_dim)"
            )
        # The index, not the order, says which text a vector is of: each one once, or rows
        # would go to the wrong texts (bool and float are refused: True == 1, 0.0 == 0).
        if indices != list(range(count)) or any(type(i) is not int for i in indices):
            raise EngineError(
                f"{self.upstream} gave embeddings whose indices are not 0 to {count - 1}"
            )
        if not all(np.isfinite(row).all() for row in rows):  # JSON's null reads as NaN
            raise EngineError(f"{self.upstream} gave embeddings with NaN, infinite or null values")
        return rows


def _text(body: bytes) -> str:
    """An error answer's own words: OpenAI's ``error.message``, or its start."""
    try:
        error = orjson.loads(body).get("error")
        message = error.get("message") if isinstance(error, dict) else error
        if isinstance(message, str) and message:
            return message
    except (orjson.JSONDecodeError, AttributeError):
        pass
    return body[:500].decode("utf-8", "replace")


def _batch_error(exc: UpstreamError) -> Exception:
    if exc.status == 429:
        return Overloaded(str(exc), retry_after=exc.retry_after or 1.0, reason="upstream")
    if exc.status in (502, 503):
        return Unavailable(str(exc))
    if exc.status == 504:
        return DeadlineExceeded(str(exc))
    if exc.status < 500:
        return BadRequest(str(exc))
    return EngineError(str(exc))


class _Reply:
    def __init__(self, response: Any, meter: StreamMeter, upstream: str) -> None:
        self.response = response
        self.upstream = upstream
        self.status: int = response.status_code
        self.content_type: bytes = response.headers.get("content-type", "").encode("latin-1")
        self.meter = meter

    async def chunks(self) -> AsyncIterator[bytes]:
        import httpx

        try:
            async for chunk in self.response.aiter_bytes():
                self.meter.feed(chunk)
                yield chunk
        except httpx.HTTPError as exc:
            raise EngineError(f"the upstream stream broke off: {type(exc).__name__}") from exc
        self.meter.finish()


class OpenAIChat(_Client):
    """A chat/completions relay to one upstream model; no batching."""

    def __init__(self, name: str, spec: OpenAISpec, metrics: Metrics) -> None:
        super().__init__(name, spec)
        self.metrics = metrics

    @contextlib.asynccontextmanager
    async def open(
        self, path: str, body: dict[str, Any], deadline: float | None = None
    ) -> AsyncIterator[_Reply]:
        self.breaker.check()
        started = time.monotonic()
        stream = body.get("stream") is True
        limit, callers_bound = started + self.spec.timeout_s, False
        if deadline is not None and deadline < limit:  # the client's X-Request-Timeout
            limit, callers_bound = deadline, deadline - started < self.spec.timeout_s / 2
        try:
            response = await retrying(
                lambda deadline: self.send(path, body, deadline, stream=stream),
                self.spec,
                limit,
            )
        except Exception as exc:
            # A 500 may be this request's own doing (its content crashed the upstream): one
            # client could open the breaker for all. The health check finds a dead upstream.
            note_failure(self.breaker, exc, callers_bound)
            if isinstance(exc, UpstreamError) and exc.status in DOWN:
                self.breaker.failure(str(exc))
            raise
        self.breaker.success()
        meter = StreamMeter(self.name, started, self.metrics, stream=stream)
        try:
            yield _Reply(response, meter, self.upstream)
        finally:
            await response.aclose()  # unread: closes the connection, which stops upstream
