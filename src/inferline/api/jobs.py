"""The job queue over HTTP: ``POST /v1/jobs`` enqueues, ``GET /v1/jobs/{id}`` reads the outcome.

Without ``INFERLINE_REDIS_URL`` both answer 503; nothing else depends on Redis."""

from __future__ import annotations

from typing import TYPE_CHECKING

from inferline.api.app import Route
from inferline.api.http import Request, Send, send_json
from inferline.api.validation import check_object, check_texts
from inferline.errors import InvalidInput, NotFound, Unavailable
from inferline.queue.keys import MODELS, check_job_id
from inferline.telemetry import context

if TYPE_CHECKING:
    from inferline.queue.producer import Producer
    from inferline.service import Service


def routes(service: Service) -> list[Route]:
    settings, metrics = service.settings, service.metrics
    producers: list[Producer] = []  # made on first use, in the server's event loop

    def producer() -> Producer:
        if not settings.redis_url:
            raise Unavailable(
                "the job queue is not configured: set INFERLINE_REDIS_URL to a Redis server"
            )
        if not producers:
            from inferline.queue.producer import Producer  # keeps redis out of plain serving

            producers.append(Producer.from_settings(settings))
            service.on_close(producers[0].close)
        return producers[0]

    async def submit(request: Request, send: Send) -> None:
        queue = producer()
        body = check_object(await request.json(), {"model", "inputs", "id"})
        model = body.get("model")
        if not isinstance(model, str):
            raise InvalidInput("missing field 'model' ('sentiment' or 'embedding')")
        if "inputs" not in body:
            raise InvalidInput("missing field 'inputs' (a list of strings)")
        inputs = check_texts(body["inputs"], settings, "inputs")
        job_id = check_job_id(body["id"]) if "id" in body else None
        record = context.current()
        if record is not None and model in MODELS:
            record.model, record.items = model, len(inputs)
        job_id, new = await queue.submit(model, inputs, job_id)
        metrics.jobs.labels(model, "submitted" if new else "duplicate").inc()
        await send_json(send, 202, {"id": job_id})

    async def status(request: Request, send: Send) -> None:
        queue = producer()
        job_id = check_job_id(request.path_params["id"])
        outcome = await queue.status(job_id)
        if outcome is None:
            raise NotFound(f"no job {job_id!r} (unknown, or its result expired)")
        await send_json(send, 200, outcome)

    return [
        Route("POST", "/v1/jobs", submit, protocol="jobs"),
        Route("GET", "/v1/jobs/{id}", status, protocol="jobs"),
    ]
