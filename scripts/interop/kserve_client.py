"""KServe's own clients (InferenceRESTClient, InferenceGRPCClient) against inferline. Prints
one JSON object: the labels over REST (JSON and binary tensors) and gRPC, the embedding's
shape, and the health answers. Run in the KServe venv:

    python kserve_client.py HTTP_URL GRPC_TARGET TEXT...
"""

import asyncio
import json
import sys

import numpy as np
from kserve import InferenceGRPCClient, InferenceRESTClient, InferInput, InferRequest, RESTConfig


def request(model: str, texts: list[str], binary: bool = False) -> InferRequest:
    tensor = InferInput(name="text", shape=[len(texts)], datatype="BYTES")
    data = np.array([t.encode() for t in texts], dtype=object)
    tensor.set_data_from_numpy(data, binary_data=binary)
    return InferRequest(model_name=model, infer_inputs=[tensor], request_id="kserve-1")


def text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def main(url: str, target: str, texts: list[str]) -> dict[str, object]:
    found: dict[str, object] = {}
    rest = InferenceRESTClient(RESTConfig(protocol="v2", timeout=30))
    found["live"] = await rest.is_server_live(url)
    found["ready"] = await rest.is_server_ready(url)
    found["model_ready"] = await rest.is_model_ready(url, "sentiment")
    for binary in (False, True):
        answer = await rest.infer(url, request("sentiment", texts, binary), model_name="sentiment")
        labels = [text(v) for v in answer.outputs[0].as_numpy()]
        found["rest_binary" if binary else "rest_json"] = {"id": answer.id, "labels": labels}
    answer = await rest.infer(url, request("embedding", texts), model_name="embedding")
    found["embedding_shape"] = list(np.asarray(answer.outputs[0].as_numpy()).shape)
    await rest.close()
    grpc = InferenceGRPCClient(target)
    answer = await grpc.infer(request("sentiment", texts))
    found["grpc"] = {"id": answer.id, "labels": [text(v) for v in answer.outputs[0].as_numpy()]}
    await grpc.close()
    return found


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3:]))))
