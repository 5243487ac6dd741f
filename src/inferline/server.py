"""Run the service: HTTP under uvicorn (uvloop + httptools) and gRPC (grpc.aio) in one event
loop, with our own signal handling."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Iterator

import uvicorn
import uvloop
from uvicorn.config import STARTUP_FAILURE

from inferline import tls
from inferline.api.factory import create_app
from inferline.api.wire import GatheringProtocol
from inferline.config import Settings
from inferline.engines import registry
from inferline.errors import Unavailable
from inferline.grpc import server as grpc_server
from inferline.modelrepo.manifest import Manifest
from inferline.service import Service
from inferline.telemetry import logs, tracing

log = logging.getLogger(__name__)


class _Server(uvicorn.Server):
    # uvicorn re-raises a captured signal after shutdown, so the process would die of
    # SIGTERM instead of exiting 0; serve() installs its own handlers instead.
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def serve(settings: Settings) -> None:
    """Serve until SIGTERM or SIGINT; accepted requests finish within the grace period."""
    logs.configure(settings.log_level, refusal_lines=settings.access_log_refusals_per_s)
    tracing.configure_from_env()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # see TextEncoder
    Manifest.load(settings.model_dir)  # fail fast, before binding, when nothing was built
    tls.check(settings)  # and when a TLS file cannot be used
    registry.load_config(settings.models_config)  # and when the models config is wrong
    service = Service(settings)
    config = uvicorn.Config(
        create_app(settings, service),
        host=settings.host,
        port=settings.port,
        lifespan="on",
        http=GatheringProtocol,  # httptools, one socket write per response, JSON errors
        ws="none",  # no WebSocket routes: an Upgrade request is served as plain HTTP
        access_log=False,  # ours (inferline.access) carries the model, tokens and timings
        log_config=None,  # keep the JSON logging set up above
        log_level=settings.log_level,
        backlog=2048,
        limit_concurrency=settings.max_connections,
        proxy_headers=False,  # client addresses are not used; skip the middleware
        server_header=False,
        **tls.uvicorn_options(settings),
    )
    # Typed int, used as float seconds (call_later, wait_for): int() cut a grace of 3 s, less
    # the moment the gRPC drain took, to 2, and a keep-alive of 0.2 s rose to 1.
    config.timeout_keep_alive = settings.keep_alive_s  # type: ignore[assignment]
    config.timeout_graceful_shutdown = max(1.0, settings.shutdown_grace_s)  # type: ignore[assignment]
    server = _Server(config)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        try:
            rpc = await grpc_server.start(service, settings)
        except OSError as exc:  # the same exit as any other start-up mistake: 2
            raise Unavailable(f"{exc}; set INFERLINE_GRPC_PORT to a free port") from None
        grace = settings.shutdown_grace_s
        stopping: list[asyncio.Task[None]] = []

        def on_signal(sig: signal.Signals) -> None:
            if stopping:  # a second signal: stop waiting
                server.force_exit = server.should_exit = True
                stopping.append(loop.create_task(rpc.stop(None)))
                return
            log.info("received %s: draining", sig.name)
            service.begin_drain()  # readiness turns 503 at once
            # gRPC takes no new calls from now on. HTTP shuts down (and closes the batchers)
            # only once the gRPC calls in flight are done, or the grace period is over.
            started = loop.time()

            def close_http(_: object) -> None:
                # One grace period for both: HTTP waits only for what the gRPC drain left
                # of it, so the pod's terminationGracePeriodSeconds holds.
                left = grace - (loop.time() - started)
                config.timeout_graceful_shutdown = max(1.0, left)  # type: ignore[assignment]
                server.should_exit = True

            task = loop.create_task(rpc.stop(grace))
            task.add_done_callback(close_http)
            stopping.append(task)

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal, sig)
        try:
            await _serve_http(server, settings)
        finally:
            await rpc.stop(grace)  # idempotent: returns once the gRPC server has stopped
            await asyncio.gather(*stopping)

    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(main())
    finally:
        service.metrics.process_exits()
        tracing.shutdown()  # flush the spans still buffered


async def _serve_http(server: uvicorn.Server, settings: Settings) -> None:
    try:
        await server.serve()
    except SystemExit as exc:
        # uvicorn logged why (its lifespan here never fails: the model loads behind it);
        # exit as any other start-up mistake does, 2
        if exc.code != STARTUP_FAILURE:
            raise
        where = f"{settings.host}:{settings.port}"
        raise Unavailable(
            f"cannot bind HTTP to {where}; set INFERLINE_PORT to a free port"
        ) from None
