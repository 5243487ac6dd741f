"""Ray Serve: one replica with ``@serve.batch`` (max_batch_size 32, batch_wait_timeout_s 5 ms).

``max_ongoing_requests`` is 128 so that enough requests reach the replica to fill batches
(Ray's guide: at least the batch size). One batch runs at a time in the replica: 2 ONNX
Runtime threads (``PEER_THREADS``). The model call is synchronous inside the batch handler,
as in Ray's batching guide. Ray runs on 2 CPUs, without its dashboard.
"""

from __future__ import annotations

import signal
import sys
import threading
from typing import Any

import ray
from peer_model import SentimentModel, parse, port, respond, split, threads
from ray import serve
from starlette.requests import Request
from starlette.responses import JSONResponse


@serve.deployment(max_ongoing_requests=128, ray_actor_options={"num_cpus": 0})
class Sentiment:
    def __init__(self) -> None:
        self.model = SentimentModel(threads=threads(2))

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)
    async def run(self, batch: list[list[str]]) -> list[list[dict[str, Any]]]:
        flat = [text for texts in batch for text in texts]
        return split(self.model.predict(flat), [len(texts) for texts in batch])

    async def __call__(self, request: Request) -> JSONResponse:
        try:
            texts, single = parse(await request.json())
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=422)
        return JSONResponse(respond(await self.run(texts), single))


def main() -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="warning")
    serve.start(http_options={"host": "127.0.0.1", "port": port()})
    serve.run(Sentiment.bind(), route_prefix="/", blocking=False)
    print("ready", flush=True)
    stop.wait()
    serve.shutdown()
    ray.shutdown()
    sys.exit(0)


if __name__ == "__main__":
    main()
