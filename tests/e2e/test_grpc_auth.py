"""API keys over gRPC with Triton's client: UNAUTHENTICATED without a key, health open."""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton
from tritonclient.utils import InferenceServerException

from tests.conftest import Server, ServerFactory


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


def test_a_rotated_keys_file_takes_effect_on_both_protocols(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    """The Secret's file is swapped in place (as kubelet does); no restart."""
    server = keyed_by_file(server_factory, tmp_path, "before-rotation\n")
    swap_keys(tmp_path, "after-rotation\n")
    client, tensor = grpc_client(server)
    try:
        for key, status, code in (
            ("before-rotation", 401, "UNAUTHENTICATED"),
            ("after-rotation", 200, None),
        ):
            r = httpx.post(server.url + "/predict", json={"text": "x"}, headers={"x-api-key": key})
            assert r.status_code == status, key
            if code is None:
                client.infer("sentiment", [tensor], headers={"x-api-key": key})
            else:
                with pytest.raises(InferenceServerException) as denied:
                    client.infer("sentiment", [tensor], headers={"x-api-key": key})
                assert denied.value.status() == f"StatusCode.{code}"
    finally:
        client.close()


def test_filling_an_empty_keys_file_turns_keys_on(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    """The manifests ship the keys Secret empty; an operator fills it later, with no restart."""
    server = keyed_by_file(server_factory, tmp_path, "")
    assert httpx.post(server.url + "/predict", json={"text": "x"}).status_code == 200
    document = httpx.get(server.url + "/openapi.json").json()
    assert "401" in document["paths"]["/predict"]["post"]["responses"]  # keys may come
    swap_keys(tmp_path, "filled-later\n")
    client, tensor = grpc_client(server)
    try:
        denied = httpx.post(server.url + "/predict", json={"text": "x"})
        assert denied.status_code == 401 and "www-authenticate" in denied.headers
        with pytest.raises(InferenceServerException) as refused:
            client.infer("sentiment", [tensor])
        assert refused.value.status() == "StatusCode.UNAUTHENTICATED"
        ok = httpx.post(
            server.url + "/predict", json={"text": "x"}, headers={"x-api-key": "filled-later"}
        )
        assert ok.status_code == 200
        client.infer("sentiment", [tensor], headers={"x-api-key": "filled-later"})
        assert "filled-later" not in server.output()
    finally:
        client.close()


def keyed_by_file(server_factory: ServerFactory, tmp: Path, keys: str) -> Server:
    (tmp / "keys").write_text(keys)
    env = {"INFERLINE_API_KEYS_FILE": str(tmp / "keys"), "INFERLINE_API_KEYS_RELOAD_S": "0.2"}
    return server_factory(env)


def swap_keys(tmp: Path, keys: str) -> None:
    """As kubelet updates a mounted Secret: a new file swapped in; then past the reload."""
    fresh = tmp / "keys.new"
    fresh.write_text(keys)
    os.replace(fresh, tmp / "keys")
    time.sleep(0.5)


def grpc_client(server: Server) -> tuple[triton.InferenceServerClient, triton.InferInput]:
    tensor = triton.InferInput("text", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([b"great"], dtype=np.object_))
    return triton.InferenceServerClient(server.grpc_target), tensor
