"""Triton's HTTP client (``tritonclient.http``), unmodified, against a real server.

The client sends and receives tensors with the binary tensor data extension by default; the
tests run both that and plain JSON.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from tests.conftest import Server
from tests.e2e.samples import NON_ASCII, REVIEWS, SENTIMENT_OUTPUTS
from tests.integration.saturation import QUEUE, saturated


@pytest.fixture
def oip(server: Server) -> Iterator[triton.InferenceServerClient]:
    client = triton.InferenceServerClient(server.url.removeprefix("http://"))
    yield client
    client.close()


def text_input(texts: list[str] | list[bytes], binary: bool = True) -> triton.InferInput:
    data = np.array([t.encode() if isinstance(t, str) else t for t in texts], dtype=np.object_)
    tensor = triton.InferInput("text", [len(texts)], "BYTES")
    tensor.set_data_from_numpy(data, binary_data=binary)
    return tensor


def test_health(oip: triton.InferenceServerClient) -> None:
    assert oip.is_server_live()
    assert oip.is_server_ready()
    assert oip.is_model_ready("sentiment")
    assert oip.is_model_ready("embedding", "1")
    assert not oip.is_model_ready("nope")
    assert not oip.is_model_ready("sentiment", "2")


def test_server_metadata(oip: triton.InferenceServerClient) -> None:
    meta = oip.get_server_metadata()
    assert meta["name"] == "inferline"
    assert meta["version"]
    assert "binary_tensor_data" in meta["extensions"]


def test_model_metadata(oip: triton.InferenceServerClient) -> None:
    sentiment = oip.get_model_metadata("sentiment")
    assert sentiment["name"] == "sentiment" and sentiment["versions"] == ["1"]
    assert sentiment["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    assert sentiment["outputs"] == [
        {"name": "label", "datatype": "BYTES", "shape": [-1]},
        {"name": "score", "datatype": "FP32", "shape": [-1]},
        {"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]},
    ]
    assert sentiment["parameters"]["labels"] == "Negative,Neutral,Positive"
    embedding = oip.get_model_metadata("embedding", "1")
    assert embedding["outputs"] == [{"name": "embedding", "datatype": "FP32", "shape": [-1, 384]}]
    with pytest.raises(InferenceServerException) as err:
        oip.get_model_metadata("nope")
    assert err.value.status() == "404"


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_sentiment(oip: triton.InferenceServerClient, client: httpx.Client, binary: bool) -> None:
    outputs = [triton.InferRequestedOutput(name, binary_data=binary) for name in SENTIMENT_OUTPUTS]
    result = oip.infer(
        "sentiment", [text_input(REVIEWS, binary)], outputs=outputs, request_id="req-1"
    )
    response = result.get_response()
    assert response["id"] == "req-1" and response["model_name"] == "sentiment"
    labels = result.as_numpy("label")
    score = result.as_numpy("score")
    probs = result.as_numpy("probabilities")
    assert labels.shape == (3,) and score.shape == (3,) and probs.shape == (3, 3)
    assert score.dtype == np.float32 and probs.dtype == np.float32
    assert strings(labels)[:2] == ["Positive", "Negative"]
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-4)
    np.testing.assert_allclose(score, probs[:, 2] - probs[:, 0], atol=1e-6)
    # The same texts through /predict give the same answers.
    rest = client.post("/predict", json={"texts": REVIEWS}).json()["results"]
    assert strings(labels) == [r["label"] for r in rest]
    expected = np.array([list(r["probabilities"].values()) for r in rest], dtype=np.float32)
    np.testing.assert_allclose(probs, expected, atol=1e-5)


@pytest.mark.parametrize("compression", ["gzip", "deflate"])
@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_compressed_requests(
    oip: triton.InferenceServerClient, binary: bool, compression: str
) -> None:
    """tritonclient's request_compression_algorithm; the answer, asked for compressed too,
    may come back plain, which the client reads as it is."""
    plain = oip.infer("embedding", [text_input(REVIEWS, binary)]).as_numpy("embedding")
    result = oip.infer(
        "embedding",
        [text_input(REVIEWS, binary)],
        outputs=[triton.InferRequestedOutput("embedding", binary_data=binary)],
        request_compression_algorithm=compression,
        response_compression_algorithm=compression,
    )
    np.testing.assert_allclose(result.as_numpy("embedding"), plain, atol=1e-6)


def test_all_outputs_by_default(oip: triton.InferenceServerClient) -> None:
    result = oip.infer("sentiment", [text_input(REVIEWS[:1])])
    assert [o["name"] for o in result.get_response()["outputs"]] == SENTIMENT_OUTPUTS
    assert "id" not in result.get_response()


def test_requested_outputs_only(oip: triton.InferenceServerClient) -> None:
    outputs = [triton.InferRequestedOutput("score"), triton.InferRequestedOutput("label")]
    result = oip.infer("sentiment", [text_input(REVIEWS[:2])], outputs=outputs)
    assert [o["name"] for o in result.get_response()["outputs"]] == ["score", "label"]
    assert result.as_numpy("probabilities") is None
    assert strings(result.as_numpy("label")) == ["Positive", "Negative"]


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_embedding_equals_embed(
    oip: triton.InferenceServerClient, client: httpx.Client, binary: bool
) -> None:
    outputs = [triton.InferRequestedOutput("embedding", binary_data=binary)]
    result = oip.infer(
        "embedding", [text_input(REVIEWS, binary)], model_version="1", outputs=outputs
    )
    vectors = result.as_numpy("embedding")
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    embed = client.post("/embed", json={"texts": REVIEWS}).json()["embeddings"]
    np.testing.assert_allclose(vectors, np.array(embed, dtype=np.float32), atol=1e-6)


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_non_ascii_round_trip(
    oip: triton.InferenceServerClient, client: httpx.Client, binary: bool
) -> None:
    outputs = [triton.InferRequestedOutput(name, binary_data=binary) for name in SENTIMENT_OUTPUTS]
    result = oip.infer("sentiment", [text_input(NON_ASCII, binary)], outputs=outputs)
    rest = client.post("/predict", json={"texts": NON_ASCII}).json()["results"]
    assert strings(result.as_numpy("label")) == [r["label"] for r in rest]
    np.testing.assert_allclose(
        result.as_numpy("score"), [r["score"] for r in rest], rtol=0, atol=1e-5
    )


def strings(array: np.ndarray) -> list[str]:
    """BYTES elements as text: the client gives bytes from binary data, str from JSON."""
    return [x.decode() if isinstance(x, bytes) else x for x in array.tolist()]


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
def test_bad_tensor_is_400(oip: triton.InferenceServerClient, kind: str, message: str) -> None:
    with pytest.raises(InferenceServerException, match=message) as err:
        oip.infer("sentiment", [bad_input(kind)])
    assert err.value.status() == "400"


def test_unknown_output_is_400(oip: triton.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException, match="no output 'nope'") as err:
        oip.infer("sentiment", [text_input(["ok"])], outputs=[triton.InferRequestedOutput("nope")])
    assert err.value.status() == "400"


@pytest.mark.parametrize(("model", "version"), [("nope", ""), ("sentiment", "2")])
def test_unknown_model_or_version_is_404(
    oip: triton.InferenceServerClient, model: str, version: str
) -> None:
    with pytest.raises(InferenceServerException) as err:
        oip.infer(model, [text_input(["ok"])], model_version=version)
    assert err.value.status() == "404"


def test_deadline_is_504(oip: triton.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException, match="deadline") as err:
        oip.infer("sentiment", [text_input(["ok"])], timeout=1)  # Triton's µs timeout
    assert err.value.status() == "504"
    with pytest.raises(InferenceServerException) as err:
        oip.infer("sentiment", [text_input(["ok"])], headers={"X-Request-Timeout": "0.000001"})
    assert err.value.status() == "504"


def test_full_queue_is_429(busy_server: Server) -> None:
    oip = triton.InferenceServerClient(busy_server.url.removeprefix("http://"))
    try:
        with (
            saturated(busy_server, "embedding"),
            pytest.raises(InferenceServerException, match="queue is full") as err,
        ):
            oip.infer("embedding", [text_input(["text"])])
        assert err.value.status() == "429"
        with pytest.raises(InferenceServerException, match="holds at most") as err:
            oip.infer("embedding", [text_input(["text"] * (QUEUE + 1))])
        assert err.value.status() == "400"
    finally:
        oip.close()


def test_not_ready_is_503(failed_server: Server) -> None:
    oip = triton.InferenceServerClient(failed_server.url.removeprefix("http://"))
    try:
        assert oip.is_server_live()
        assert not oip.is_server_ready()
        assert not oip.is_model_ready("sentiment")
        with pytest.raises(InferenceServerException) as err:
            oip.infer("sentiment", [text_input(["ok"])])
        assert err.value.status() == "503"
    finally:
        oip.close()
