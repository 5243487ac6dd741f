"""MLServer: a custom runtime with adaptive batching (max_batch_size 32, max_batch_time 5 ms).

``/predict`` is a custom handler that builds an Open Inference Protocol request and awaits
``self.predict``, which MLServer replaces with its adaptive batcher when the model loads, so
every request goes through the batcher (the native ``/v2/models/sentiment/infer`` route is
there too). ``parallel_workers`` is 0 (settings.json): MLServer's worker pool runs custom
handlers inside the workers, past the batcher, so batching and ``/predict`` need the model
in the main process. Predict runs on the event loop, one batch at a time: 2 ONNX Runtime
threads (``PEER_THREADS``).
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from mlserver import MLModel
from mlserver.codecs import NumpyCodec, StringCodec
from mlserver.context import model_context
from mlserver.handlers import custom_handler
from mlserver.types import InferenceRequest, InferenceResponse
from peer_model import SentimentModel, parse, respond, threads


class SentimentRuntime(MLModel):
    async def load(self) -> bool:
        self.model = SentimentModel(threads=threads(2))
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        texts = StringCodec.decode_input(payload.inputs[0])
        probs = self.model.probabilities(texts)
        return InferenceResponse(
            model_name=self.name, outputs=[NumpyCodec.encode_output("probabilities", probs)]
        )

    @custom_handler(rest_path="/predict")
    async def predict_json(self, request: Request) -> Any:
        try:
            texts, single = parse(await request.json())
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=422)
        payload = InferenceRequest(inputs=[StringCodec.encode_input("text", texts)])
        with model_context(self.settings):  # as MLServer's own data plane does
            response = await self.predict(payload)
        probs = NumpyCodec.decode_output(response.outputs[0])
        return JSONResponse(respond(self.model.results(probs), single))
