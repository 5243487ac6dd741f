"""API keys over gRPC with Triton's client: UNAUTHENTICATED without a key, health open."""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.grpc as triton
from tritonclient.utils import InferenceServerException

from tests.conftest import ServerFactory


def test_grpc_needs_the_key_but_health_is_open(server_factory: ServerFactory) -> None:
    server = server_factory({"INFERLINE_API_KEYS": "grpc-key-1"})
    client = triton.InferenceServerClient(server.grpc_target)
    try:
        assert client.is_server_live() and client.is_server_ready()
        assert client.is_model_ready("sentiment")
        tensor = triton.InferInput("text", [1], "BYTES")
        tensor.set_data_from_numpy(np.array([b"great"], dtype=np.object_))
        with pytest.raises(InferenceServerException) as denied:
            client.infer("sentiment", [tensor])
        assert denied.value.status() == "StatusCode.UNAUTHENTICATED"
        with pytest.raises(InferenceServerException):
            client.get_model_metadata("sentiment", headers={"authorization": "Bearer nope"})
        ok = client.infer("sentiment", [tensor], headers={"authorization": "Bearer grpc-key-1"})
        assert ok.as_numpy("label") is not None
        meta = client.get_model_metadata("sentiment", headers={"x-api-key": "grpc-key-1"})
        assert meta.name == "sentiment"
    finally:
        client.close()
