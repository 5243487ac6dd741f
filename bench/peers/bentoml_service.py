"""BentoML: a batchable API (adaptive batching, max_batch_size 32) on ``/predict``.

BentoML batches only an API whose argument is a list, so this peer's ``/predict`` takes
``{"texts": [str, ...]}`` and answers a list of results, one per text (bench/measure.py sends
a one-text list on ``single``). Its adaptive batcher picks the wait itself within
``max_latency_ms``; the default of 60 s is kept so that nothing is refused. One worker runs
one batch at a time: 2 ONNX Runtime threads (``PEER_THREADS``).

    bentoml serve bentoml_service:Sentiment --host 127.0.0.1 --port PORT
"""

from __future__ import annotations

from typing import Any

import bentoml
from peer_model import SentimentModel, threads


# No access log: no other system here logs each request.
@bentoml.service(workers=1, traffic={"timeout": 60}, logging={"access": {"enabled": False}})
class Sentiment:
    def __init__(self) -> None:
        self.model = SentimentModel(threads=threads(2))

    @bentoml.api(route="/predict", batchable=True, max_batch_size=32)
    def predict(self, texts: list[str]) -> list[dict[str, Any]]:
        return self.model.predict(texts)
