"""The seed design: FastAPI, one synchronous model call per request, no batching.

A plain ``def`` endpoint, so FastAPI runs each call in its thread pool. ONNX Runtime: 1
intra-op thread per call (``PEER_THREADS``), since the thread pool already runs calls side by
side on the 2 cores; 2 threads per call measured slower here (oversubscription).
"""

from __future__ import annotations

from typing import Any

import uvicorn
from fastapi import FastAPI, HTTPException
from peer_model import SentimentModel, parse, port, respond, threads

model = SentimentModel(threads=threads(1))
app = FastAPI()


@app.post("/predict")
def predict(body: dict[str, Any]) -> dict[str, Any]:
    try:
        texts, single = parse(body)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from exc
    return respond(model.predict(texts), single)


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=port(), log_level="warning")
