"""The grpc.aio server that carries GRPCInferenceService and grpc.health.v1.Health, bound
beside the HTTP server."""

from __future__ import annotations

import logging

import grpc
from grpc_health.v1.health_pb2_grpc import add_HealthServicer_to_server

from inferline import tls
from inferline.config import Settings
from inferline.grpc.auth import ApiKeyInterceptor
from inferline.grpc.decode import DecodeInterceptor
from inferline.grpc.health import HealthServicer
from inferline.grpc.open_inference_grpc_pb2_grpc import add_GRPCInferenceServiceServicer_to_server
from inferline.grpc.servicer import InferenceServicer
from inferline.service import Service

log = logging.getLogger(__name__)


async def start(service: Service, settings: Settings) -> grpc.aio.Server:
    """Binds ``settings.host:settings.grpc_port`` and starts serving; call in the running loop.

    Raises OSError when the port cannot be bound."""
    server = grpc.aio.server(
        # The key check first: a caller without a key learns nothing of message parsing.
        interceptors=[ApiKeyInterceptor(service.keys), DecodeInterceptor()],
        options=[
            ("grpc.max_receive_message_length", settings.max_body_bytes),
            # gRPC sets SO_REUSEPORT by default, so a second server on a taken port would
            # start and share it silently; a taken port must fail as it does for HTTP.
            ("grpc.so_reuseport", 0),
        ],
    )
    add_GRPCInferenceServiceServicer_to_server(InferenceServicer(service), server)
    add_HealthServicer_to_server(HealthServicer(service), server)
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    address = f"{host}:{settings.grpc_port}"
    credentials = tls.grpc_credentials(settings)
    try:
        if credentials is None:
            port = server.add_insecure_port(address)
        else:
            port = server.add_secure_port(address, credentials)
    except RuntimeError as exc:
        raise OSError(f"cannot bind gRPC to {address}: {exc}") from exc
    await server.start()
    scheme = " over TLS" if credentials is not None else ""
    log.info("gRPC (Open Inference Protocol) on %s:%d%s", settings.host, port, scheme)
    return server
