"""Build the ASGI app for a service."""

from __future__ import annotations

from inferline.api import chat, jobs, oip, openai, openapi, routes
from inferline.api.app import App
from inferline.config import Settings
from inferline.service import Service


def create_app(settings: Settings, service: Service | None = None) -> App:
    service = service or Service(settings)
    return App(
        service,
        [
            *routes.routes(service),
            *oip.routes(service),
            *openai.routes(service),
            *chat.routes(service),
            *jobs.routes(service),
            *openapi.routes(settings),
        ],
        service.keys,
    )
