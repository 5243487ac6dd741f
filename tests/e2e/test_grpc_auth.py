"""API keys over gRPC with Triton's client: UNAUTHENTICATED without a key, health open."""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
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


def test_http_and_grpc_share_one_set_of_keys(server_factory: ServerFactory, tmp_path: Path) -> None:
    """A rotation seen by HTTP's requests only, then a file emptied by mistake: gRPC must
    keep the keys HTTP kept (each protocol had a set of its own, and gRPC kept the old key)."""
    server = keyed_by_file(server_factory, tmp_path, "key-one\n")
    swap_keys(tmp_path, "key-two\n")
    ok = httpx.post(server.url + "/predict", json={"text": "x"}, headers={"x-api-key": "key-two"})
    assert ok.status_code == 200
    swap_keys(tmp_path, "")
    client, tensor = grpc_client(server)
    try:
        client.infer("sentiment", [tensor], headers={"x-api-key": "key-two"})
        with pytest.raises(InferenceServerException) as denied:
            client.infer("sentiment", [tensor], headers={"x-api-key": "key-one"})
        assert denied.value.status() == "StatusCode.UNAUTHENTICATED"
    finally:
        client.close()


def test_grpc_refusals_by_key_are_counted_and_logged_as_http_ones_are(
    server_factory: ServerFactory,
) -> None:
    env = {"INFERLINE_API_KEYS": "k1", "INFERLINE_MAX_CONCURRENT_PER_KEY": "1"}
    server = server_factory({**env, "INFERLINE_LANES": "1"})
    long = ("a long review of a very ordinary kitchen blender " * 20).encode()
    tensor = triton.InferInput("text", [16], "BYTES")
    tensor.set_data_from_numpy(np.array([long] * 16, dtype=np.object_))
    client = triton.InferenceServerClient(server.grpc_target)

    def infer(headers: dict[str, str]) -> str:
        try:
            client.infer("sentiment", [tensor], headers=headers)
        except InferenceServerException as exc:
            return str(exc.status())
        return "OK"

    try:
        denied = infer({"authorization": "Bearer wrong"})
        with ThreadPoolExecutor(6) as pool:
            codes = list(pool.map(infer, [{"x-api-key": "k1"}] * 6))
    finally:
        client.close()
    assert denied == "StatusCode.UNAUTHENTICATED"
    limited = codes.count("StatusCode.RESOURCE_EXHAUSTED")
    assert limited >= 1 and codes.count("OK") == 6 - limited, codes
    text = httpx.get(server.url + "/metrics").text
    requests = 'inferline_requests_total{model="none",protocol="oip_grpc",status="%s"} 1.0'
    assert requests % "UNAUTHENTICATED" in text
    assert 'inferline_rejected_total{reason="unauthorized"} 1.0' in text
    assert f'inferline_rejected_total{{reason="key_limit"}} {float(limited)}' in text
    lines = [line for line in server.output().splitlines() if '"ModelInfer"' in line]
    assert sum('"status":"UNAUTHENTICATED"' in line for line in lines) == 1, lines


def test_without_a_key_an_unparseable_message_is_unauthenticated(
    server_factory: ServerFactory,
) -> None:
    """The key is checked before the message is parsed: a caller without one learns
    nothing else. With the key, the same bytes are INVALID_ARGUMENT, and counted."""
    server = server_factory({"INFERLINE_API_KEYS": "k1"})
    garbage = b"\xff\xff\xff\xff\x0f garbage"
    service = "/inference.GRPCInferenceService/"
    with grpc.insecure_channel(server.grpc_target) as channel:
        for method in ("ModelInfer", "ModelMetadata"):
            call = channel.unary_unary(
                service + method, request_serializer=bytes, response_deserializer=bytes
            )
            for metadata, code in (
                ((), grpc.StatusCode.UNAUTHENTICATED),
                ((("x-api-key", "wrong"),), grpc.StatusCode.UNAUTHENTICATED),
                ((("x-api-key", "k1"),), grpc.StatusCode.INVALID_ARGUMENT),
            ):
                with pytest.raises(grpc.RpcError) as err:
                    call(garbage, metadata=metadata, timeout=30)
                assert err.value.code() == code, (method, metadata, err.value.details())
                if code == grpc.StatusCode.INVALID_ARGUMENT:
                    assert "does not parse" in str(err.value.details())
    text = httpx.get(server.url + "/metrics").text
    requests = 'inferline_requests_total{model="none",protocol="oip_grpc",status="%s"} %s'
    assert requests % ("UNAUTHENTICATED", "2.0") in text  # ModelInfer's, counted
    assert requests % ("INVALID_ARGUMENT", "1.0") in text


def test_a_repeated_key_header_is_refused_on_both_protocols(server_factory: ServerFactory) -> None:
    """HTTP read the first of two X-API-Key headers and gRPC the last, so one request was
    refused on one protocol and served on the other. Now both refuse two different values;
    a wrong key says invalid_token (RFC 6750), and X-API-Key is read before Authorization."""
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    server = server_factory({"INFERLINE_API_KEYS": "good-key-1"})
    both = [("x-api-key", "nope"), ("x-api-key", "good-key-1")]
    cases = {
        "repeated": (both, 401, "more than once"),
        "repeated-reversed": (both[::-1], 401, "more than once"),
        "wrong": ([("x-api-key", "nope")], 401, "not valid"),
        "proxy-bearer": ([("authorization", "Bearer proxy"), ("x-api-key", "good-key-1")], 200, ""),
    }
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        request = service_pb2.ModelMetadataRequest(name="sentiment")
        for name, (headers, status, message) in cases.items():
            r = httpx.get(server.url + "/v2/models/sentiment", headers=headers)
            assert r.status_code == status, name
            try:
                stub.ModelMetadata(request, metadata=headers, timeout=10)
                code = grpc.StatusCode.OK
            except grpc.RpcError as exc:
                code = exc.code()
                assert message in (exc.details() or ""), name
            assert code == (
                grpc.StatusCode.OK if status == 200 else grpc.StatusCode.UNAUTHENTICATED
            )
            if status == 401:
                assert message in r.json()["error"], name
                invalid = 'error="invalid_token"' in r.headers["www-authenticate"]
                assert invalid == (name == "wrong"), name
    r = httpx.post(
        server.url + "/v1/embeddings",
        json={"model": "all-MiniLM-L6-v2", "input": "x"},
        headers={"authorization": "Bearer nope"},
    )
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
