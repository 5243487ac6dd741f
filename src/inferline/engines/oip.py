"""OipEngine: batches forwarded to a remote Open Inference Protocol v2 server (Triton,
KServe, MLServer, another inferline), over HTTP (httpx) or gRPC (grpc.aio).

A batch goes as one request: the ``text`` input, BYTES [N], and one requested output,
FP32 [N, dim] (``probabilities`` for sentiment, ``embedding`` for embedding by default),
whose rows come back in order, as OnnxEngine's do. Over HTTP the texts go as JSON, which
every server takes, and the output is asked for as binary data (Triton's extension; a
server without it answers JSON, which is read as well). Over gRPC both go raw.

Inference has no side effects, so a request is safe to repeat: connection failures
(refused, reset, closed before an answer), 503 / UNAVAILABLE and 429 / RESOURCE_EXHAUSTED
are retried with jittered backoff within the engine's ``timeout_s``; a timeout is not
retried, since the upstream may still be running the batch.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import secrets
import ssl
import struct
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import orjson

from inferline.engines.config import OipSpec, display
from inferline.engines.http1 import ConnectTimeout, Http1Pool, UpstreamClosed
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
from inferline.errors import DeadlineExceeded, EngineError, Overloaded, Unavailable
from inferline.types import EngineInfo, FloatArray, Item

HEADER_LENGTH = "inference-header-content-length"
DTYPES = {"FP32": "<f4", "FP16": "<f2", "FP64": "<f8"}
_LENGTH = struct.Struct("<I")
MAX_MESSAGE = 256 * 1024 * 1024


def serialize_bytes(texts: Sequence[str]) -> bytes:
    """A raw BYTES tensor: each element's 4-byte little-endian length, then its bytes."""
    parts: list[bytes] = []
    for text in texts:
        data = text.encode("utf-8")
        parts += (_LENGTH.pack(len(data)), data)
    return b"".join(parts)


class OipEngine:
    def __init__(self, name: str, spec: OipSpec, *, output_dim: int, max_tokens: int) -> None:
        self.name = name
        self.spec = spec
        self.remote = spec.remote_model or name
        self.output = spec.output or ("probabilities" if name == "sentiment" else "embedding")
        self._headers = default_headers(spec)  # reads the key now: a missing one fails the load
        self._tls = spec.tls_files()  # and the TLS files, kept for a grpcs:// channel
        self.breaker = Breaker(name, spec.url, spec.failure_threshold)
        self._transport: _Http | _Grpc | None = None
        # Each batch carries an id upstream, for correlating logs on both sides (and KServe's
        # REST server answers 500 to a request without one when its model echoes the id).
        self._ids = itertools.count(1)
        self._id_prefix = f"{name}-{secrets.token_hex(4)}-"
        self._monitor: Monitor | None = None
        self._info = EngineInfo(
            name=name,
            inputs=(spec.input,),
            output=self.output,
            output_dim=output_dim,
            max_tokens=max_tokens,
            device=f"oip-{spec.protocol} {display(spec.url)}",
            lanes=spec.concurrency,
            engine="oip",
            pads=False,  # the upstream batches (and pads) on its own
            sends_text=True,
        )

    def __repr__(self) -> str:
        return f"OipEngine({self.name!r}, {self._info.device!r})"

    @property
    def info(self) -> EngineInfo:
        return self._info

    @property
    def ready(self) -> bool:
        return not self.breaker.open

    async def start(self) -> None:
        # Clients are made here, on the event loop (grpc.aio binds to it), not in the
        # loading thread.
        spec = self.spec
        errors = ErrorLog(self.name, spec.url)
        transport = (
            _Http(spec, self._headers, errors)
            if spec.protocol == "http"
            else _Grpc(spec, self._headers, self._tls, errors)
        )
        self._transport = transport
        self._monitor = Monitor(self.breaker, transport.health, spec.health_interval_s)
        await self._monitor.start()

    async def infer(self, items: Sequence[Item]) -> Sequence[FloatArray | BaseException]:
        self.breaker.check()
        if self._transport is None:
            raise Unavailable(f"the engine of model {self.name!r} has not started")
        texts = [item.text for item in items]
        batch_id = f"{self._id_prefix}{next(self._ids)}"  # retries keep it: the same batch
        attempt = functools.partial(
            self._transport.infer, self.remote, self.output, texts, batch_id=batch_id
        )
        deadline, callers_bound = call_deadline(self.spec, items)
        try:
            matrix = await retrying(attempt, self.spec, deadline)
        except Exception as exc:
            note_failure(self.breaker, exc, callers_bound)
            raise
        self.breaker.success()
        expected = (len(items), self._info.output_dim)
        if matrix.shape != expected:
            raise EngineError(
                f"the upstream's {self.output!r} has shape {list(matrix.shape)}, "
                f"not {list(expected)}"
            )
        if not np.isfinite(matrix).all():  # JSON's null reads as NaN; FP64 past FP32 as inf
            raise EngineError(f"the upstream's {self.output!r} has NaN, infinite or null values")
        return list(matrix)

    async def close(self) -> None:
        if self._monitor is not None:
            await self._monitor.close()
        if self._transport is not None:
            await self._transport.close()


class _Http:
    """OIP REST over HTTP/1.1 keep-alive connections (engines/http1.py), or over httpx when
    ``http2`` is set."""

    def __init__(self, spec: OipSpec, headers: dict[str, str], errors: ErrorLog) -> None:
        self.spec = spec
        context = spec.ssl_context()
        self.pool: Http1Pool | _Httpx
        if spec.http2:
            self.pool = _Httpx(spec, context, max_answer=MAX_MESSAGE)
        else:
            if context is None and spec.url.startswith("https:"):
                import httpx  # its trust store (certifi, SSL_CERT_FILE), as with http2

                context = httpx.create_ssl_context()
            self.pool = Http1Pool(
                spec.url,
                ssl_context=context,
                max_connections=spec.max_connections,
                max_answer=MAX_MESSAGE,
            )
        self.headers = list(headers.items())
        self.upstream = upstream_of(errors.name)  # in errors: clients learn no address
        self.errors = errors  # what the upstream said goes here, not to clients
        self.version = f"/versions/{spec.remote_version}" if spec.remote_version else ""

    async def _call(
        self, method: str, path: str, content: bytes, headers: list[tuple[str, str]], left: float
    ) -> tuple[int, Mapping[str, str], bytes]:
        connect = min(left, self.spec.connect_timeout_s)
        return await self.pool.request(
            method, path, headers, content, seconds=left, connect_timeout=connect
        )

    async def infer(
        self, model: str, output: str, texts: list[str], deadline: float, *, batch_id: str
    ) -> Any:
        body: dict[str, Any] = {
            "id": batch_id,
            "inputs": [
                {"name": self.spec.input, "datatype": "BYTES", "shape": [len(texts)], "data": texts}
            ],
            "outputs": [{"name": output}],
        }
        if self.spec.binary_data:
            body["parameters"] = {"binary_data_output": True}
        headers = [*self.headers, ("content-type", "application/json")]
        headers += trace_headers().items()
        left = max(deadline - time.monotonic(), 0.001)
        path = f"/v2/models/{model}{self.version}/infer"
        try:
            status, response_headers, content = await self._call(
                "POST", path, orjson.dumps(body), headers, left
            )
        except ConnectTimeout as exc:  # its text names the address: for the log alone
            raise Retry(Unavailable(f"{self.upstream}: no connection in time")) from exc
        except TimeoutError as exc:  # the upstream may still be running it: not retried
            raise DeadlineExceeded(f"{self.upstream} did not answer in time") from exc
        except OSError as exc:  # refused, reset, closed before an answer (UpstreamClosed)
            raise Retry(Unavailable(f"{self.upstream}: {_why(exc)}")) from exc
        if status == 200:
            return _parse_rest(content, response_headers.get(HEADER_LENGTH), output)
        cause = self.errors.said(str(status), _detail(content))
        where = f"{self.upstream} answered {status}"
        raise _http_error(status, response_headers.get("retry-after"), where) from cause

    async def health(self, seconds: float) -> None:
        status, _, _ = await self._call("GET", "/v2/health/ready", b"", self.headers, seconds)
        if status != 200:
            raise Unavailable(f"/v2/health/ready answered {status}")

    async def close(self) -> None:
        await self.pool.aclose()


class _Httpx:
    """httpx's transport, called directly (the client's layers, redirects, cookies, auth
    flows and URL merging, cost about as much as the request and do nothing here), with its
    errors in the terms of engines/http1.py."""

    def __init__(self, spec: OipSpec, context: ssl.SSLContext | None, *, max_answer: int) -> None:
        import httpx

        quiet_httpx()
        self.transport = httpx.AsyncHTTPTransport(
            verify=context if context is not None else True,
            http2=spec.http2,
            limits=httpx.Limits(
                max_connections=spec.max_connections,
                max_keepalive_connections=spec.max_connections,
            ),
        )
        self.base = spec.url.rstrip("/")
        self._urls: dict[str, httpx.URL] = {}  # parsed once per path
        self.max_answer = max_answer

    async def request(
        self,
        method: str,
        path: str,
        headers: Sequence[tuple[str, str]],
        body: bytes,
        *,
        seconds: float,
        connect_timeout: float,
    ) -> tuple[int, Mapping[str, str], bytes]:
        import httpx

        url = self._urls.get(path)
        if url is None:
            url = self._urls[path] = httpx.URL(self.base + path)
        timeouts = {"connect": connect_timeout, "read": seconds, "write": seconds, "pool": seconds}
        request = httpx.Request(
            method, url, content=body, headers=headers, extensions={"timeout": timeouts}
        )
        try:
            # httpx's read timeout is per chunk: a body that drips would hold the call long
            # past ``seconds``. This bounds the whole answer, as Http1Pool does; closing a
            # response not read to its end closes its connection, which hangs up.
            async with asyncio.timeout(seconds):
                response = await self.transport.handle_async_request(request)
                try:
                    return response.status_code, response.headers, await self._read(response)
                finally:
                    await response.aclose()
        except httpx.ConnectTimeout as exc:
            raise ConnectTimeout(type(exc).__name__) from exc
        except httpx.TimeoutException as exc:
            raise TimeoutError(type(exc).__name__) from exc
        except (httpx.NetworkError, httpx.RemoteProtocolError) as exc:
            raise UpstreamClosed(type(exc).__name__) from exc
        except httpx.HTTPError as exc:
            raise EngineError(f"the upstream's answer failed: {type(exc).__name__}") from exc

    async def _read(self, response: Any) -> bytes:
        """The whole answer, at most ``max_answer`` bytes, as Http1Pool reads it."""
        chunks, size = [], 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > self.max_answer:
                raise UpstreamClosed(f"answer over {self.max_answer} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    async def aclose(self) -> None:
        await self.transport.aclose()


def _why(exc: OSError) -> str:
    """A connection failure in words, without the address (which its text may hold)."""
    if isinstance(exc, UpstreamClosed):
        return str(exc)
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionResetError):
        return "connection reset"
    return "no connection"


def _detail(content: bytes) -> str:
    """The upstream's own words: OIP's ``error``, or the start of an answer that is not OIP's
    (a proxy's HTML page, say)."""
    try:
        return str(orjson.loads(content).get("error", ""))
    except (orjson.JSONDecodeError, AttributeError):
        return content[:500].decode("utf-8", "replace")


def _http_error(status: int, retry: str | None, message: str) -> Exception:
    """The error of an answer that is not 200: ``message`` names the upstream and the status
    and nothing the upstream said, since the 429, 503 and 504 go to clients as they are;
    what it said is the error's cause, for the log and the job queue's dead letters."""
    wait = retry_after(retry)
    if status == 429:
        return Retry(Overloaded(message, retry_after=wait or 1.0, reason="upstream"), wait)
    if status == 503:
        return Retry(Unavailable(message), wait)
    if status == 504:
        return DeadlineExceeded(message)
    if 400 <= status < 500:
        return BadRequest(message)
    return EngineError(message)


def _float_type(output: str, datatype: str) -> np.dtype[Any]:
    """The NumPy type of an output the upstream sent as ``datatype``: only floats are scores
    or vectors, and reading other types' bytes as floats would give numbers, all wrong."""
    if datatype not in DTYPES:
        kinds = ", ".join(DTYPES)
        raise EngineError(f"{output!r} from the upstream is {datatype}, not one of {kinds}")
    return np.dtype(DTYPES[datatype])


def _parse_rest(content: bytes, header_length: str | None, output: str) -> Any:
    """The ``output`` tensor of a REST answer, JSON or with binary data after the header."""
    size = int(header_length) if header_length and header_length.isdigit() else len(content)
    try:
        header = orjson.loads(content[:size])
        offset = size
        for tensor in header["outputs"]:
            params = tensor.get("parameters") or {}
            length = params.get("binary_data_size")
            if tensor["name"] == output:
                dtype = _float_type(output, tensor["datatype"])
                with np.errstate(over="ignore"):  # past FP32's range: inf, refused by infer
                    if length is None:
                        data = np.asarray(tensor["data"], dtype=np.float32)
                    else:
                        count = int(length) // dtype.itemsize
                        data = np.frombuffer(content, dtype, count, offset).astype(np.float32)
                return data.reshape(tensor["shape"])
            offset += int(length or 0)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise EngineError(
            f"the upstream's answer is not a valid inference response: {exc}"
        ) from None
    raise EngineError(f"the upstream's answer has no output {output!r}")


class _Grpc:
    def __init__(
        self,
        spec: OipSpec,
        headers: dict[str, str],
        tls: tuple[bytes | None, bytes | None, bytes | None],
        errors: ErrorLog,
    ) -> None:
        import grpc

        from inferline.grpc import open_inference_grpc_pb2_grpc as services

        self.spec = spec
        self.upstream = upstream_of(errors.name)
        self.errors = errors
        options = [
            ("grpc.max_receive_message_length", MAX_MESSAGE),
            ("grpc.max_send_message_length", MAX_MESSAGE),
            # gRPC waits up to 120 s between reconnections by default: far too long to
            # notice that a restarted upstream is back.
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 2000),
        ]
        target = spec.url
        if target.startswith("grpcs://"):
            ca, cert, key = tls
            credentials = grpc.ssl_channel_credentials(
                root_certificates=ca, private_key=key, certificate_chain=cert
            )
            self.channel = grpc.aio.secure_channel(target[8:], credentials, options)
        else:
            self.channel = grpc.aio.insecure_channel(target.removeprefix("grpc://"), options)
        self.stub: Any = services.GRPCInferenceServiceStub(self.channel)
        self.metadata = tuple((k.lower(), v) for k, v in headers.items())

    async def infer(
        self, model: str, output: str, texts: list[str], deadline: float, *, batch_id: str
    ) -> Any:
        import grpc

        from inferline.grpc import open_inference_grpc_pb2 as pb

        request = pb.ModelInferRequest(
            id=batch_id,
            model_name=model,
            model_version=self.spec.remote_version,
            inputs=[
                pb.ModelInferRequest.InferInputTensor(
                    name=self.spec.input, datatype="BYTES", shape=[len(texts)]
                )
            ],
            outputs=[pb.ModelInferRequest.InferRequestedOutputTensor(name=output)],
            raw_input_contents=[serialize_bytes(texts)],
        )
        try:
            response = await self.stub.ModelInfer(
                request,
                timeout=max(deadline - time.monotonic(), 0.001),
                metadata=self.metadata + tuple(trace_headers().items()),
            )
        except grpc.aio.AioRpcError as exc:
            self.errors.said(exc.code().name, exc.details() or "")
            raise _grpc_error(exc, self.upstream) from exc
        return _parse_grpc(response, output)

    async def health(self, seconds: float) -> None:
        from inferline.grpc import open_inference_grpc_pb2 as pb

        response = await self.stub.ServerReady(
            pb.ServerReadyRequest(), timeout=seconds, metadata=self.metadata
        )
        if not response.ready:
            raise Unavailable("ServerReady answered false")

    async def close(self) -> None:
        await self.channel.close(None)


def _parse_grpc(response: Any, output: str) -> Any:
    """The ``output`` tensor of a ModelInferResponse: raw contents or typed ones."""
    for i, tensor in enumerate(response.outputs):
        if tensor.name == output:
            dtype = _float_type(output, tensor.datatype)
            try:
                if response.raw_output_contents:
                    data = np.frombuffer(response.raw_output_contents[i], dtype)
                elif tensor.datatype == "FP64":
                    data = np.asarray(tensor.contents.fp64_contents, dtype=np.float64)
                else:
                    data = np.asarray(tensor.contents.fp32_contents, dtype=np.float32)
                with np.errstate(over="ignore"):  # past FP32's range: inf, refused by infer
                    return data.astype(np.float32).reshape(tuple(tensor.shape))
            except (ValueError, IndexError) as exc:
                raise EngineError(f"{output!r} from the upstream: {exc}") from None
    raise EngineError(f"the upstream's answer has no output {output!r}")


def _grpc_error(exc: Any, where: str) -> Exception:
    import grpc

    code = exc.code()
    # The details, the upstream's words or gRPC's own (which name the address it could not
    # reach), stay in the cause and the log: clients get the code alone.
    message = f"{where} answered {code.name}"
    if code == grpc.StatusCode.UNAVAILABLE:
        return Retry(Unavailable(f"{where} is unreachable or unavailable ({code.name})"))
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return Retry(Overloaded(message, reason="upstream"))
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return DeadlineExceeded(message)
    if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND):
        return BadRequest(message)
    return EngineError(message)
