"""Triton's gRPC client (``tritonclient.grpc``), unmodified, against a real server.

The client sends ``raw_input_contents`` and reads ``raw_output_contents``. (This process must
not import inferline's own generated protobuf modules: both register package ``inference``.)
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton
from tritonclient.utils import InferenceServerException

from tests.conftest import Server, ServerFactory
from tests.e2e.samples import NON_ASCII, REVIEWS, SENTIMENT_OUTPUTS
from tests.integration.saturation import QUEUE, saturated

OK = ["fine"]


@pytest.fixture
def oip(server: Server) -> Iterator[triton.InferenceServerClient]:
    client = triton.InferenceServerClient(server.grpc_target)
    yield client
    client.close()


def text_input(texts: list[str] | list[bytes]) -> triton.InferInput:
    data = np.array([t.encode() if isinstance(t, str) else t for t in texts], dtype=np.object_)
    tensor = triton.InferInput("text", [len(texts)], "BYTES")
    tensor.set_data_from_numpy(data)
    return tensor


def test_health(oip: triton.InferenceServerClient) -> None:
    assert oip.is_server_live()
    assert oip.is_server_ready()
    assert oip.is_model_ready("sentiment")
    assert oip.is_model_ready("embedding", "1")


@pytest.mark.parametrize(("model", "version"), [("nope", ""), ("sentiment", "2")])
def test_unknown_model_is_not_found(
    oip: triton.InferenceServerClient, model: str, version: str
) -> None:
    for call in (oip.is_model_ready, oip.get_model_metadata):
        with pytest.raises(InferenceServerException) as err:
            call(model, version)
        assert err.value.status() == "StatusCode.NOT_FOUND"
    with pytest.raises(InferenceServerException) as err:
        oip.infer(model, [text_input(OK)], model_version=version)
    assert err.value.status() == "StatusCode.NOT_FOUND"


def test_metadata(oip: triton.InferenceServerClient) -> None:
    server = oip.get_server_metadata(as_json=True)
    assert server["name"] == "inferline" and server["version"]
    assert server["extensions"] == ["binary_tensor_data"]
    sentiment = oip.get_model_metadata("sentiment", as_json=True)
    assert sentiment["name"] == "sentiment" and sentiment["versions"] == ["1"]
    assert sentiment["platform"] == "onnxruntime_onnx"
    assert sentiment["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": ["-1"]}]
    assert [(o["name"], o["datatype"], o["shape"]) for o in sentiment["outputs"]] == [
        ("label", "BYTES", ["-1"]),
        ("score", "FP32", ["-1"]),
        ("probabilities", "FP32", ["-1", "3"]),
    ]
    embedding = oip.get_model_metadata("embedding", "1", as_json=True)
    assert embedding["outputs"] == [
        {"name": "embedding", "datatype": "FP32", "shape": ["-1", "384"]}
    ]


def test_sentiment(oip: triton.InferenceServerClient, client: httpx.Client) -> None:
    result = oip.infer("sentiment", [text_input(REVIEWS)], request_id="g-1")
    response = result.get_response()
    assert response.id == "g-1" and response.model_name == "sentiment"
    assert response.model_version == "1"
    assert [o.name for o in response.outputs] == SENTIMENT_OUTPUTS
    probabilities = response.outputs[2]
    assert probabilities.parameters["labels"].string_param == "Negative,Neutral,Positive"
    labels = [x.decode() for x in result.as_numpy("label")]
    probs = result.as_numpy("probabilities")
    assert probs.shape == (3, 3) and probs.dtype == np.float32
    np.testing.assert_allclose(result.as_numpy("score"), probs[:, 2] - probs[:, 0], atol=1e-6)
    rest = client.post("/predict", json={"texts": REVIEWS}).json()["results"]
    assert labels == [r["label"] for r in rest]
    expected = np.array([list(r["probabilities"].values()) for r in rest], dtype=np.float32)
    np.testing.assert_allclose(probs, expected, atol=1e-5)


def test_requested_outputs_only(oip: triton.InferenceServerClient) -> None:
    outputs = [triton.InferRequestedOutput("probabilities"), triton.InferRequestedOutput("label")]
    result = oip.infer("sentiment", [text_input(REVIEWS[:2])], outputs=outputs)
    assert [o.name for o in result.get_response().outputs] == ["probabilities", "label"]
    assert result.as_numpy("score") is None
    assert [x.decode() for x in result.as_numpy("label")] == ["Positive", "Negative"]


def test_embedding_equals_embed(oip: triton.InferenceServerClient, client: httpx.Client) -> None:
    result = oip.infer("embedding", [text_input(REVIEWS)], model_version="1")
    vectors = result.as_numpy("embedding")
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    embed = client.post("/embed", json={"texts": REVIEWS}).json()["embeddings"]
    np.testing.assert_allclose(vectors, np.array(embed, dtype=np.float32), atol=1e-6)


def test_non_ascii_round_trip(oip: triton.InferenceServerClient, client: httpx.Client) -> None:
    result = oip.infer("sentiment", [text_input(NON_ASCII)])
    rest = client.post("/predict", json={"texts": NON_ASCII}).json()["results"]
    assert [x.decode() for x in result.as_numpy("label")] == [r["label"] for r in rest]
    np.testing.assert_allclose(result.as_numpy("score"), [r["score"] for r in rest], atol=1e-5)


def bad_input(kind: str) -> triton.InferInput:
    if kind == "datatype":
        tensor = triton.InferInput("text", [1], "FP32")
        tensor.set_data_from_numpy(np.array([1.0], dtype=np.float32))
        return tensor
    if kind == "shape":
        tensor = text_input(REVIEWS[:2])
        tensor.set_shape([3])
        return tensor
    if kind == "name":
        tensor = triton.InferInput("review", [1], "BYTES")
        tensor.set_data_from_numpy(np.array([b"fine"], dtype=np.object_))
        return tensor
    return text_input([b"ok", b"\xff\xfe not UTF-8"])


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("datatype", "datatype BYTES"),
        ("shape", r"shape \[3\] but 2 elements"),
        ("name", "no input 'review'"),
        ("utf8", "not valid UTF-8"),
    ],
)
def test_bad_tensor_is_invalid_argument(
    oip: triton.InferenceServerClient, kind: str, message: str
) -> None:
    with pytest.raises(InferenceServerException, match=message) as err:
        oip.infer("sentiment", [bad_input(kind)])
    assert err.value.status() == "StatusCode.INVALID_ARGUMENT"


def test_unknown_output_is_invalid_argument(oip: triton.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException, match="no output 'nope'") as err:
        oip.infer("sentiment", [text_input(OK)], outputs=[triton.InferRequestedOutput("nope")])
    assert err.value.status() == "StatusCode.INVALID_ARGUMENT"


def test_deadline_is_deadline_exceeded(oip: triton.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException, match="deadline") as err:
        oip.infer("sentiment", [text_input(OK)], timeout=1)  # Triton's µs timeout parameter
    assert err.value.status() == "StatusCode.DEADLINE_EXCEEDED"


def test_full_queue_is_resource_exhausted(busy_server: Server) -> None:
    oip = triton.InferenceServerClient(busy_server.grpc_target)
    try:
        with (
            saturated(busy_server, "embedding"),
            pytest.raises(InferenceServerException, match="queue is full") as err,
        ):
            oip.infer("embedding", [text_input(["text"])])
        assert err.value.status() == "StatusCode.RESOURCE_EXHAUSTED"
        with pytest.raises(InferenceServerException, match="holds at most") as err:
            oip.infer("embedding", [text_input(["text"] * (QUEUE + 1))])
        assert err.value.status() == "StatusCode.INVALID_ARGUMENT"
    finally:
        oip.close()


def test_not_ready_is_unavailable(failed_server: Server) -> None:
    oip = triton.InferenceServerClient(failed_server.grpc_target)
    try:
        assert oip.is_server_live()
        assert not oip.is_server_ready()
        with pytest.raises(InferenceServerException) as err:
            oip.infer("sentiment", [text_input(OK)])
        assert err.value.status() == "StatusCode.UNAVAILABLE"
    finally:
        oip.close()


def test_sigterm_lets_calls_in_flight_finish(server_factory: ServerFactory) -> None:
    server = server_factory()
    oip = triton.InferenceServerClient(server.grpc_target)
    texts = ["the battery is fine but the screen is dim " * 30] * 48  # about a second of work
    results: list[triton.InferResult] = []
    errors: list[BaseException] = []

    def call() -> None:
        try:
            results.append(oip.infer("embedding", [text_input(texts)]))
        except BaseException as exc:
            errors.append(exc)

    try:
        thread = threading.Thread(target=call)
        thread.start()
        time.sleep(0.2)  # the call is in the server
        assert server.stop(signal.SIGTERM) == 0
        thread.join(30)
        assert not errors, errors
        assert results[0].as_numpy("embedding").shape == (48, 384)
        assert "Traceback" not in server.output()
    finally:
        oip.close()
