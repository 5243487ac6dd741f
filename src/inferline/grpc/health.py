"""grpc.health.v1.Health on the gRPC port, for Kubernetes gRPC probes, Envoy and
grpc-health-probe. The status is read from the service on every call, as /health/ready is.

Service names (the request's ``service``):

- ``""`` or ``inference.GRPCInferenceService``: the server is ready (OIP ServerReady);
- ``live``: the process is serving (always SERVING; /health/live);
- a model name, ``sentiment`` or ``embedding``: that model is ready (OIP ModelReady);
- anything else: NOT_FOUND from Check, SERVICE_UNKNOWN from Watch.
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
from grpc_health.v1 import health_pb2 as hpb
from grpc_health.v1 import health_pb2_grpc

from inferline.api import tensors
from inferline.errors import NotFound, Unavailable
from inferline.service import Service, State

SERVER_NAMES = ("", "inference.GRPCInferenceService")
LIVE = "live"
WATCH_POLL_S = 0.5  # engine readiness (a remote upstream) changes with no event to wait on

SERVING = hpb.HealthCheckResponse.SERVING
NOT_SERVING = hpb.HealthCheckResponse.NOT_SERVING
SERVICE_UNKNOWN = hpb.HealthCheckResponse.SERVICE_UNKNOWN


class HealthServicer(health_pb2_grpc.HealthServicer):  # type: ignore[misc]
    def __init__(self, service: Service) -> None:
        self.service = service

    def status(self, name: str) -> Any:
        """The serving status of ``name``; SERVICE_UNKNOWN for a name that is not served."""
        if name == LIVE:
            return SERVING
        if name in SERVER_NAMES:
            return SERVING if self.service.ready else NOT_SERVING
        try:
            tensors.signature(self.service, name)
        except Unavailable:  # loading, failed or draining: not known yet, and not ready
            return NOT_SERVING
        except NotFound:
            return SERVICE_UNKNOWN
        return SERVING if self.service.model_ready(name) else NOT_SERVING

    async def Check(self, request: hpb.HealthCheckRequest, context: Any) -> Any:
        status = self.status(request.service)
        if status == SERVICE_UNKNOWN:
            names = ", ".join(repr(n) for n in (*SERVER_NAMES, LIVE, *sorted(self.service.models)))
            await context.abort(
                grpc.StatusCode.NOT_FOUND, f"unknown service {request.service!r}; known: {names}"
            )
        return hpb.HealthCheckResponse(status=status)

    async def Watch(self, request: hpb.HealthCheckRequest, context: Any) -> None:
        """Sends the status, then each change. The stream ends once the server drains, after
        NOT_SERVING, so that watchers do not hold the shutdown for its whole grace period."""
        last = None
        while True:
            # Read together, before the write yields: the last status sent is a draining one.
            draining = self.service.state is State.DRAINING
            status = self.status(request.service)
            if status != last:
                await context.write(hpb.HealthCheckResponse(status=status))
                last = status
            if draining:
                return
            await asyncio.sleep(WATCH_POLL_S)
