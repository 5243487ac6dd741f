"""A KServe ModelServer with one custom model, ``embedding``: a deterministic unit vector of
384 floats per text (seeded by its SHA-256). Run in the KServe venv:

    python kserve_model.py HTTP_PORT GRPC_PORT
"""

import hashlib
import sys

import numpy as np
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer


def vector(text: bytes) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha256(text).digest()[:4], "little")
    v = np.random.default_rng(seed).standard_normal(384).astype(np.float32)
    return v / np.linalg.norm(v)


class Embedding(Model):
    def __init__(self) -> None:
        super().__init__("embedding")
        self.ready = True

    async def predict(self, payload: InferRequest, headers=None, response_headers=None):
        texts = payload.inputs[0].as_numpy()
        rows = np.stack([vector(t if isinstance(t, bytes) else str(t).encode()) for t in texts])
        out = InferOutput(name="embedding", shape=list(rows.shape), datatype="FP32")
        out.set_data_from_numpy(rows, binary_data=False)
        # As KServe's own runtimes do: the request's id, echoed.
        return InferResponse(model_name=self.name, infer_outputs=[out], response_id=payload.id)


if __name__ == "__main__":
    ModelServer(http_port=int(sys.argv[1]), grpc_port=int(sys.argv[2])).start([Embedding()])
