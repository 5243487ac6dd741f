"""Run the HTTP service under uvicorn (uvloop + httptools)."""

from __future__ import annotations

import logging

import uvicorn

from inferline.api.factory import create_app
from inferline.config import Settings
from inferline.modelrepo.manifest import Manifest


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format='{"time":"%(asctime)s","level":"%(levelname)s","logger":"%(name)s","message":"%(message)s"}',
    )


def serve(settings: Settings) -> None:
    """Serve until SIGTERM or SIGINT; accepted requests finish within the grace period."""
    configure_logging(settings.log_level)
    Manifest.load(settings.model_dir)  # fail fast, before binding, when nothing was built
    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_level=settings.log_level,
        timeout_graceful_shutdown=int(settings.shutdown_grace_s) or None,
        backlog=2048,
    )
    uvicorn.Server(config).run()
