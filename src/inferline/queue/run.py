"""``inferline worker``: start a Service in this process, then run the queue worker on it
until SIGTERM or SIGINT, draining within ``INFERLINE_SHUTDOWN_GRACE_S``. Its metrics and
health endpoints answer from the start (queue/health.py)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from wsgiref.simple_server import WSGIServer

import uvloop

from inferline.config import Settings
from inferline.errors import Unavailable
from inferline.queue.health import Readiness, WorkerHealth, serve
from inferline.queue.keys import connect
from inferline.queue.worker import Worker, default_name
from inferline.service import Service, State
from inferline.telemetry import logs, tracing

log = logging.getLogger(__name__)


async def work(settings: Settings) -> None:
    """Load the model, then read jobs until a signal; the jobs in hand are written before
    the grace period ends, or left to be reclaimed by another worker."""
    if not settings.redis_url:
        raise Unavailable("the worker needs INFERLINE_REDIS_URL")
    service = Service(settings)
    worker: Worker | None = None

    def readiness() -> str | None:
        if worker is not None:
            return worker.not_ready_reason()
        if service.state is not State.READY:
            return service.not_ready_reason()
        return "not reading the stream yet"

    # A busy port fails before the load.
    metrics_server = _serve_http(service, settings, readiness)
    if not await _load(service, metrics_server):
        return  # a signal came while loading
    client = connect(settings, block_ms=settings.queue_block_ms)
    worker = Worker(
        service, client, settings, settings.worker_name or default_name(), service.metrics
    )
    loop = asyncio.get_running_loop()
    task = loop.create_task(worker.run())

    def on_signal(sig: signal.Signals) -> None:
        if worker.stopping:  # a second signal: stop waiting
            task.cancel()
            return
        log.info("received %s: draining", sig.name)
        worker.stop()
        # Jobs still in hand when the grace period ends stay pending and are reclaimed.
        loop.call_later(settings.shutdown_grace_s, task.cancel)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    log.info("worker %s reading %s", worker.name, worker.keys.stream)
    try:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    finally:
        await service.close(1.0)
        await client.aclose()
        if metrics_server is not None:
            metrics_server.shutdown()
        service.metrics.process_exits()
        log.info("worker %s stopped after %d job(s)", worker.name, worker.processed)


async def _load(service: Service, metrics_server: WSGIServer | None) -> bool:
    """Start the service; False when SIGTERM or SIGINT came first."""
    loop = asyncio.get_running_loop()
    loading = asyncio.current_task()
    signalled: list[signal.Signals] = []

    def while_loading(sig: signal.Signals) -> None:
        # Nothing is held yet: stop at once. As PID 1 with no handler the signal would be
        # dropped, and the pod would wait out its whole grace period.
        signalled.append(sig)
        if loading is not None:
            loading.cancel()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, while_loading, sig)
    log.info("worker loading the models")
    try:
        await service.start()
        if service.state is not State.READY:  # a remote upstream that is down is waited for
            raise Unavailable(service.not_ready_reason())
    except BaseException as exc:
        if metrics_server is not None:
            metrics_server.shutdown()
        service.metrics.process_exits()
        if signalled and isinstance(exc, asyncio.CancelledError):
            log.info("received %s while loading: stopped", signalled[0].name)
            return False
        raise
    return True


def _serve_http(service: Service, settings: Settings, readiness: Readiness) -> WSGIServer | None:
    """The worker's ``/metrics`` and health endpoints (queue/health.py)."""
    if not settings.worker_metrics_port:
        return None
    app = WorkerHealth(asyncio.get_running_loop(), service.metrics.registry, readiness)
    try:
        server = serve(app, settings.host, settings.worker_metrics_port)
    except OSError as exc:
        raise Unavailable(
            f"the worker's metrics port {settings.worker_metrics_port} cannot be used ({exc}); "
            "set INFERLINE_WORKER_METRICS_PORT to a free port, or to 0 to turn it off"
        ) from None
    log.info("worker metrics and health on port %d", settings.worker_metrics_port)
    return server


def run_worker(settings: Settings) -> None:
    logs.configure(settings.log_level)
    tracing.configure_from_env("inferline-worker")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(work(settings))
    finally:
        tracing.shutdown()
