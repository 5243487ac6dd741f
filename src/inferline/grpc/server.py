"""The grpc.aio server that carries GRPCInferenceService and grpc.health.v1.Health, bound
beside the HTTP server."""

from __future__ import annotations

import logging
import socket

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

    Raises OSError when the port cannot be bound, and ValueError when gRPC refuses the TLS
    certificate or key."""
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
        # gRPC gives the same error for both; its TLS library refuses some files that
        # Python's (and so tls.check) accepts: a DSA or RSA-PSS key, a TRUSTED CERTIFICATE.
        if credentials is not None and _can_bind(settings.host, settings.grpc_port):
            raise ValueError(
                f"TLS: gRPC cannot use the certificate or key (tls_cert_file "
                f"{settings.tls_cert_file}, tls_key_file {settings.tls_key_file}), though "
                "Python's ssl can: give an RSA or ECDSA key, and certificates in BEGIN "
                "CERTIFICATE blocks"
            ) from None
        raise OSError(f"cannot bind gRPC to {address}: {exc}") from exc
    await server.start()
    scheme = " over TLS" if credentials is not None else ""
    log.info("gRPC (Open Inference Protocol) on %s:%d%s", settings.host, port, scheme)
    return server


def _can_bind(host: str, port: int) -> bool:
    """Whether a plain socket can bind every address of ``host:port``, as gRPC would."""
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError:
        return False
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC does
            try:
                probe.bind(address)
            except OSError:
                return False
    return True
