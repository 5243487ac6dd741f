"""Answer a gRPC message that does not parse with INVALID_ARGUMENT, not UNKNOWN.

grpc.aio calls the request deserializer before any handler, and turns its exception into
UNKNOWN with a logged traceback. This interceptor gives every unary handler a deserializer
that hands an undecodable message to the handler as a marker, and the handler refuses it.
It runs inside the API key interceptor (grpc/server.py), so a caller without a valid key
hears UNAUTHENTICATED whatever it sent.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError


class _Undecodable:
    __slots__ = ()


UNDECODABLE = _Undecodable()
# Handed UNDECODABLE itself: ModelInfer checks the API key first, then refuses it, counted,
# logged and traced as its other refusals are (grpc/servicer.py).
PASSED_THROUGH = ("/inference.GRPCInferenceService/ModelInfer",)


class DecodeInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    async def intercept_service(
        self, continuation: Callable[[Any], Awaitable[Any]], details: Any
    ) -> Any:
        handler = await continuation(details)
        if handler is None or handler.request_deserializer is None:
            return handler
        # Unary requests only; a server-streaming behaviour here is a coroutine that writes
        # to the context (Health.Watch), so the same wrapper serves it.
        inner = handler.unary_unary or handler.unary_stream
        if inner is None:
            return handler
        parse = handler.request_deserializer

        def deserialize(data: bytes) -> Any:
            try:
                return parse(data)
            except DecodeError:
                return UNDECODABLE

        async def call(request: Any, context: Any) -> Any:
            if request is UNDECODABLE and details.method not in PASSED_THROUGH:
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT, "the request message does not parse"
                )
            return await inner(request, context)

        kind = grpc.unary_unary_rpc_method_handler
        if handler.unary_unary is None:
            kind = grpc.unary_stream_rpc_method_handler
        return kind(
            call,
            request_deserializer=deserialize,
            response_serializer=handler.response_serializer,
        )
