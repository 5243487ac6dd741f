"""API keys on gRPC: the same keys and per-key limit as HTTP, from call metadata."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from inferline.auth import ApiKeys
from inferline.errors import Overloaded, Unauthorized

OPEN_METHODS = ("/ServerLive", "/ServerReady", "/ModelReady")  # OIP's health RPCs
# Checked by the servicer itself, where its refusals are counted, logged and traced as
# HTTP's are (grpc/servicer.py).
SELF_CHECKED = "/inference.GRPCInferenceService/ModelInfer"
HEALTH_SERVICE = "/grpc.health.v1.Health/"  # open when /health is


class ApiKeyInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    def __init__(self, keys: ApiKeys) -> None:
        self.keys = keys

    async def intercept_service(
        self,
        continuation: Callable[[Any], Awaitable[Any]],
        details: Any,
    ) -> Any:
        handler = await continuation(details)
        method = details.method or ""
        if handler is None or method == SELF_CHECKED or not self.keys.enabled:
            return handler
        if method.endswith(OPEN_METHODS) and self.keys.is_open("/v2/health"):
            return handler
        health = method.startswith(HEALTH_SERVICE)
        if health and self.keys.is_open("/health"):
            return handler
        try:
            key = identify(self.keys, details.invocation_metadata)
        except Unauthorized as exc:
            return _abort(handler, grpc.StatusCode.UNAUTHENTICATED, str(exc))
        if health:  # a Watch stream would hold a per-key slot for as long as it runs
            return handler
        return _limited(handler, self.keys, key)


def identify(keys: ApiKeys, metadata: Any) -> int:
    """The key presented in a call's metadata (``authorization: Bearer`` or ``x-api-key``),
    as :meth:`ApiKeys.identify` checks it."""
    return keys.identify((k.lower(), v) for k, v in metadata or () if isinstance(v, str))


def _abort(handler: Any, code: grpc.StatusCode, message: str) -> Any:
    async def deny(request: Any, context: Any) -> Any:
        await context.abort(code, message)

    kind = grpc.unary_unary_rpc_method_handler
    if handler.unary_stream is not None:  # Health.Watch
        kind = grpc.unary_stream_rpc_method_handler
    return kind(
        deny,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


def _limited(handler: Any, keys: ApiKeys, key: int) -> Any:
    async def call(request: Any, context: Any) -> Any:
        try:
            with keys.slot(key):
                return await handler.unary_unary(request, context)
        except Overloaded as exc:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))

    return grpc.unary_unary_rpc_method_handler(
        call,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )
