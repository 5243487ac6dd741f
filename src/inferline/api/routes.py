"""The simple REST API: /predict, /embed and the health probes."""

from __future__ import annotations

from collections.abc import Callable

from inferline.api.app import Route
from inferline.api.http import Request, Send, send_bytes, send_json
from inferline.api.validation import check_object, check_text, check_texts, deadline_of
from inferline.batching import Batcher
from inferline.errors import InvalidInput
from inferline.service import Service


def routes(service: Service) -> list[Route]:
    settings = service.settings

    async def predict(request: Request, send: Send) -> None:
        body = check_object(await request.json(), {"text", "texts"})
        deadline = deadline_of(request, settings)
        if "text" in body and "texts" in body:
            raise InvalidInput("send either 'text' or 'texts', not both")
        if "text" in body:
            text = check_text(body["text"], settings)
            (result,) = await service.results("sentiment", [text], deadline)
            await send_json(send, 200, result)
        elif "texts" in body:
            texts = check_texts(body["texts"], settings)
            results = await service.results("sentiment", texts, deadline)
            await send_json(send, 200, {"results": results})
        else:
            raise InvalidInput("missing field 'text' (a string) or 'texts' (a list of strings)")

    async def embed(request: Request, send: Send) -> None:
        body = check_object(await request.json(), {"texts"})
        if "texts" not in body:
            raise InvalidInput("missing field 'texts' (a list of strings)")
        texts = check_texts(body["texts"], settings)
        _, items, rows = await service.infer("embedding", texts, deadline_of(request, settings))
        await send_json(
            send,
            200,
            {
                "embeddings": rows,
                "dimensions": int(rows[0].shape[0]),
                "truncated": [item.truncated for item in items],
            },
        )

    async def alive(request: Request, send: Send) -> None:
        await send_json(send, 200, {"status": "alive"})

    async def ready(request: Request, send: Send) -> None:
        if service.ready:
            await send_json(send, 200, {"status": "ready", "models": sorted(service.models)})
        else:
            await send_json(
                send, 503, {"status": service.status, "error": service.not_ready_reason()}
            )

    async def metrics(request: Request, send: Send) -> None:
        body = service.metrics.render()
        await send_bytes(
            send, 200, body, [(b"content-type", service.metrics.content_type.encode())]
        )

    def queue(name: str) -> Callable[[dict[str, str]], Batcher]:
        return lambda _: service.model(name).batcher  # a full one refuses before the body

    return [
        Route("GET", "/metrics", metrics),
        Route("POST", "/predict", predict, protocol="rest", queue=queue("sentiment")),
        Route("POST", "/embed", embed, protocol="rest", queue=queue("embedding")),
        Route("GET", "/health", alive),
        Route("GET", "/health/live", alive),
        Route("GET", "/health/ready", ready),
    ]
