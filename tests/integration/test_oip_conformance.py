"""Protocol conformance, field by field: Open Inference Protocol v2 over REST and gRPC, as raw
messages against a real server with the real model.

gRPC messages come from Triton's client package (``tritonclient.grpc.service_pb2``), an
independent copy of the protocol, so that a mistake in our .proto cannot hide here.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc

from tests.conftest import Server
from tests.integration.saturation import QUEUE, saturated

TEXTS = ["I love it, works perfectly!", "Terrible, it broke in a day.", "Grüße aus Köln ☕"]


def infer_body(texts: list[Any], **extra: Any) -> dict[str, Any]:
    tensor = {"name": "text", "datatype": "BYTES", "shape": [len(texts)], "data": texts}
    return {"inputs": [tensor], **extra}


def length_prefixed(values: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(v)) + v for v in values)


# -- REST: health and metadata ------------------------------------------------------------


def test_server_endpoints(client: httpx.Client) -> None:
    r = client.get("/v2")
    assert r.status_code == 200 and set(r.json()) == {"name", "version", "extensions"}
    assert r.json()["extensions"] == ["binary_tensor_data"]
    r = client.get("/v2/health/live")
    assert r.status_code == 200 and r.json() == {"live": True}
    r = client.get("/v2/health/ready")
    assert r.status_code == 200 and r.json() == {"ready": True}


@pytest.mark.parametrize("prefix", ["/v2/models/sentiment", "/v2/models/sentiment/versions/1"])
def test_model_metadata_and_ready(client: httpx.Client, prefix: str) -> None:
    meta = client.get(prefix).json()
    assert set(meta) == {"name", "versions", "platform", "inputs", "outputs", "parameters"}
    assert meta["name"] == "sentiment" and meta["versions"] == ["1"]
    for tensor in meta["inputs"] + meta["outputs"]:
        assert set(tensor) == {"name", "datatype", "shape"}
    assert meta["parameters"] == {"labels": "Negative,Neutral,Positive"}
    r = client.get(prefix + "/ready")
    assert r.status_code == 200 and r.json() == {"name": "sentiment", "ready": True}


@pytest.mark.parametrize(
    "path",
    [
        "/v2/models/nope",
        "/v2/models/nope/ready",
        "/v2/models/sentiment/versions/2",
        "/v2/models/sentiment/versions/2/ready",
        "/v2/models/embedding/versions/0/ready",
    ],
)
def test_unknown_model_or_version_is_404(client: httpx.Client, path: str) -> None:
    r = client.get(path)
    assert r.status_code == 404 and isinstance(r.json()["error"], str)
    r = client.post(path.removesuffix("/ready") + "/infer", json=infer_body(["ok"]))
    assert r.status_code == 404 and isinstance(r.json()["error"], str)


# -- REST: inference ----------------------------------------------------------------------


def test_infer_response_fields(client: httpx.Client) -> None:
    r = client.post("/v2/models/sentiment/versions/1/infer", json=infer_body(TEXTS, id="abc"))
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    body = r.json()
    assert set(body) == {"model_name", "model_version", "id", "outputs"}
    assert (body["model_name"], body["model_version"], body["id"]) == ("sentiment", "1", "abc")
    label, score, probs = body["outputs"]
    assert {k: label[k] for k in ("name", "datatype", "shape")} == {
        "name": "label",
        "datatype": "BYTES",
        "shape": [3],
    }
    assert score["datatype"] == "FP32" and score["shape"] == [3] and len(score["data"]) == 3
    assert probs["shape"] == [3, 3] and len(probs["data"]) == 9  # flattened, row-major
    assert probs["parameters"] == {"labels": "Negative,Neutral,Positive"}
    rest = client.post("/predict", json={"texts": TEXTS}).json()["results"]
    assert label["data"] == [x["label"] for x in rest]
    rows = np.array(probs["data"]).reshape(3, 3)
    np.testing.assert_allclose(rows[:, 2] - rows[:, 0], score["data"], atol=1e-6)


def test_id_only_when_given_and_outputs_in_requested_order(client: httpx.Client) -> None:
    outputs = [{"name": "probabilities"}, {"name": "label"}]
    r = client.post("/v2/models/sentiment/infer", json=infer_body(TEXTS[:1], outputs=outputs))
    body = r.json()
    assert "id" not in body
    assert [o["name"] for o in body["outputs"]] == ["probabilities", "label"]


def test_embedding_output(client: httpx.Client) -> None:
    body = client.post("/v2/models/embedding/infer", json=infer_body(TEXTS)).json()
    (out,) = body["outputs"]
    assert (out["name"], out["datatype"], out["shape"]) == ("embedding", "FP32", [3, 384])
    vectors = np.array(out["data"], dtype=np.float32).reshape(3, 384)
    embed = client.post("/embed", json={"texts": TEXTS}).json()["embeddings"]
    np.testing.assert_array_equal(vectors, np.array(embed, dtype=np.float32))


def test_binary_tensor_data_extension(client: httpx.Client) -> None:
    raw = length_prefixed([t.encode() for t in TEXTS])
    header = {
        "id": "bin",
        "inputs": [
            {
                "name": "text",
                "datatype": "BYTES",
                "shape": [3],
                "parameters": {"binary_data_size": len(raw)},
            }
        ],
        "outputs": [
            {"name": "label", "parameters": {"binary_data": True}},
            {"name": "score", "parameters": {"binary_data": False}},
            {"name": "probabilities", "parameters": {"binary_data": True}},
        ],
    }
    head = json.dumps(header).encode()
    r = client.post(
        "/v2/models/sentiment/infer",
        content=head + raw,
        headers={"inference-header-content-length": str(len(head))},
    )
    assert r.status_code == 200, r.text
    size = int(r.headers["inference-header-content-length"])
    body = json.loads(r.content[:size])
    label, score, probs = body["outputs"]
    assert "data" not in label and "data" not in probs and len(score["data"]) == 3
    tail = r.content[size:]
    label_size = label["parameters"]["binary_data_size"]
    assert label_size + probs["parameters"]["binary_data_size"] == len(tail)
    assert probs["parameters"]["labels"] == "Negative,Neutral,Positive"
    labels, offset = [], 0
    while offset < label_size:
        (n,) = struct.unpack_from("<I", tail, offset)
        labels.append(tail[offset + 4 : offset + 4 + n].decode())
        offset += 4 + n
    rest = client.post("/predict", json={"texts": TEXTS}).json()["results"]
    assert labels == [x["label"] for x in rest]
    matrix = np.frombuffer(tail[label_size:], dtype="<f4").reshape(3, 3)
    np.testing.assert_allclose(matrix[:, 2] - matrix[:, 0], score["data"], atol=1e-6)


BAD_TENSORS: list[tuple[Any, str]] = [
    (
        infer_body(["a"])
        | {"inputs": [{"name": "text", "datatype": "FP32", "shape": [1], "data": [1.0]}]},
        "datatype BYTES",
    ),
    (
        infer_body(["a", "b"])
        | {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [3], "data": ["a", "b"]}]},
        "shape [3] but 2",
    ),
    (
        infer_body(["a"])
        | {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1, 1], "data": ["a"]}]},
        "shape [N]",
    ),
    (
        infer_body(["a"])
        | {"inputs": [{"name": "txt", "datatype": "BYTES", "shape": [1], "data": ["a"]}]},
        "no input 'txt'",
    ),
    ({"inputs": [*infer_body(["a"])["inputs"], *infer_body(["b"])["inputs"]]}, "given 2 times"),
    ({"inputs": []}, "missing input"),
    ({}, "'inputs' must be a list"),
    (
        infer_body(["a"])
        | {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": "a"}]},
        "'data'",
    ),
    (
        infer_body(["a"])
        | {"inputs": [{"name": "text", "datatype": "BYTES", "shape": ["1"], "data": ["a"]}]},
        "'shape'",
    ),
    (infer_body([5]), "must be a string"),
    (infer_body([""]), "is empty"),
    (infer_body(["x" * 2001]), "limit is 2000"),
    (infer_body(["nul\x00"]), "NUL"),
    (infer_body([f"t{i}" for i in range(9)]), "limit is 8"),
    (infer_body([]), "is empty"),
    (infer_body(["a"], extra=1), "unknown field"),
    (infer_body(["a"], id=7), "'id' must be a string"),
    (infer_body(["a"], model_name=None), "'model_name' must be a string"),
    (infer_body(["a"], model_version=1), "'model_version' must be a string"),
    (infer_body(["a"], outputs=[{"name": "nope"}]), "no output 'nope'"),
    (infer_body(["a"], outputs=[{"name": "label"}, {"name": "label"}]), "more than once"),
    (
        infer_body(["a"], outputs=[{"name": "label", "parameters": {"class_count": 2}}]),
        "classification",
    ),
    (infer_body(["a"], parameters={"timeout": "soon"}), "timeout"),
    ([1, 2], "JSON object"),
]


def test_the_model_named_in_the_body_as_kserve_client_sends_it(client: httpx.Client) -> None:
    """kserve.InferenceRESTClient (InferRequest.to_rest) repeats the model in the body; the
    URL decides, as in KServe's and Triton's servers."""
    body = infer_body(TEXTS[:1], id="k1", model_name="sentiment", parameters={})
    r = client.post("/v2/models/sentiment/infer", json=body)
    assert r.status_code == 200 and r.json()["id"] == "k1", r.text
    body = infer_body(TEXTS[:1], model_name="sentiment", model_version="1")
    r = client.post("/v2/models/embedding/versions/1/infer", json=body)
    assert r.status_code == 200 and r.json()["model_name"] == "embedding"


@pytest.mark.parametrize(("body", "message"), BAD_TENSORS)
def test_bad_tensor_is_400(client: httpx.Client, body: Any, message: str) -> None:
    r = client.post("/v2/models/sentiment/infer", json=body)
    assert r.status_code == 400, r.text
    assert message in r.json()["error"]


@pytest.mark.parametrize(
    ("content", "header", "message"),
    [
        (b"{not json", None, "not valid JSON"),
        (b"", None, "empty"),
        (b'{"inputs": []}', "99", "Inference-Header-Content-Length"),
        (b'{"inputs": []}', "x", "Inference-Header-Content-Length"),
    ],
)
def test_bad_body_is_400(
    client: httpx.Client, content: bytes, header: str | None, message: str
) -> None:
    headers = {"inference-header-content-length": header} if header else {}
    r = client.post("/v2/models/sentiment/infer", content=content, headers=headers)
    assert r.status_code == 400 and message in r.json()["error"]


def binary_request(raw: bytes, declared: int) -> tuple[bytes, dict[str, str]]:
    tensor = {"name": "text", "datatype": "BYTES", "shape": [1]}
    tensor["parameters"] = {"binary_data_size": declared}  # type: ignore[assignment]
    head = json.dumps({"inputs": [tensor]}).encode()
    return head + raw, {"inference-header-content-length": str(len(head))}


@pytest.mark.parametrize(
    ("raw", "declared", "message"),
    [
        (length_prefixed([b"\xff\xfe"]), 6, "not valid UTF-8"),
        (length_prefixed([b"ok"]), 5, "binary_data_size"),
        (b"\x09\x00\x00\x00ok", 6, "ends inside an element"),
        (b"\x02\x00", 2, "length prefix"),
    ],
)
def test_bad_binary_tensor_is_400(
    client: httpx.Client, raw: bytes, declared: int, message: str
) -> None:
    content, headers = binary_request(raw, declared)
    r = client.post("/v2/models/sentiment/infer", content=content, headers=headers)
    assert r.status_code == 400 and message in r.json()["error"]


def test_other_status_codes(client: httpx.Client) -> None:
    r = client.get("/v2/models/sentiment/infer")
    assert r.status_code == 405
    r = client.post("/v2/models/sentiment/infer", json=infer_body(["a" * 1990] * 40))
    assert r.status_code == 413
    r = client.post(
        "/v2/models/sentiment/infer",
        json=infer_body(["ok"]),
        headers={"x-request-timeout": "0.000001"},
    )
    assert r.status_code == 504 and "deadline" in r.json()["error"]
    r = client.post(
        "/v2/models/sentiment/infer", json=infer_body(["ok"], parameters={"timeout": 1})
    )
    assert r.status_code == 504


# -- gRPC: typed contents, raw contents and status codes ----------------------------------


@pytest.fixture
def stub(server: Server) -> Iterator[Any]:
    with grpc.insecure_channel(server.grpc_target) as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


def grpc_request(texts: list[bytes], raw: bool, **fields: Any) -> Any:
    request = pb.ModelInferRequest(model_name="sentiment", **fields)
    tensor = request.inputs.add(name="text", datatype="BYTES", shape=[len(texts)])
    if raw:
        request.raw_input_contents.append(length_prefixed(texts))
    else:
        tensor.contents.bytes_contents.extend(texts)
    return request


def test_grpc_typed_contents_in_typed_out(stub: Any, client: httpx.Client) -> None:
    texts = [t.encode() for t in TEXTS]
    response = stub.ModelInfer(grpc_request(texts, raw=False, id="t1", model_version="1"))
    assert (response.model_name, response.model_version, response.id) == ("sentiment", "1", "t1")
    assert not response.raw_output_contents
    label, score, probs = response.outputs
    assert (label.datatype, list(label.shape)) == ("BYTES", [3])
    assert (probs.datatype, list(probs.shape)) == ("FP32", [3, 3])
    assert probs.parameters["labels"].string_param == "Negative,Neutral,Positive"
    rest = client.post("/predict", json={"texts": TEXTS}).json()["results"]
    assert [x.decode() for x in label.contents.bytes_contents] == [x["label"] for x in rest]
    rows = np.array(probs.contents.fp32_contents, dtype=np.float32).reshape(3, 3)
    np.testing.assert_allclose(rows[:, 2] - rows[:, 0], score.contents.fp32_contents, atol=1e-6)


def test_grpc_raw_contents_in_raw_out(stub: Any) -> None:
    request = grpc_request([b"great"], raw=True)
    request.outputs.add(name="score")
    response = stub.ModelInfer(request)
    (score,) = response.outputs
    assert score.name == "score" and not score.HasField("contents")
    (raw,) = response.raw_output_contents
    assert np.frombuffer(raw, dtype="<f4").shape == (1,)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("fp32_contents", "send bytes_contents"),
        ("raw_and_typed", "no typed contents"),
        ("bad_utf8", "not valid UTF-8"),
        ("bad_raw", "length prefix"),
        ("extra_raw", "one entry per input"),
        ("classification", "classification"),
    ],
)
def test_grpc_bad_tensor_is_invalid_argument(stub: Any, change: str, message: str) -> None:
    request = grpc_request([b"ok"], raw=change in ("raw_and_typed", "bad_raw", "extra_raw"))
    tensor = request.inputs[0]
    if change == "fp32_contents":
        tensor.contents.fp32_contents.append(1.0)
    elif change == "raw_and_typed":
        tensor.contents.bytes_contents.append(b"ok")
    elif change == "bad_utf8":
        tensor.contents.bytes_contents[0] = b"\xc3\x28"
    elif change == "bad_raw":
        request.raw_input_contents[0] = b"\x01\x00"
    elif change == "extra_raw":
        request.raw_input_contents.append(b"")
    else:
        request.outputs.add(name="label").parameters["classification"].int64_param = 2
    with pytest.raises(grpc.RpcError) as err:
        stub.ModelInfer(request)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in str(err.value.details())


def test_grpc_not_found(stub: Any) -> None:
    with pytest.raises(grpc.RpcError) as err:
        stub.ModelInfer(pb.ModelInferRequest(model_name=""))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as err:
        stub.ModelMetadata(pb.ModelMetadataRequest(name="embedding", version="7"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_grpc_deadline_that_passed_is_deadline_exceeded(stub: Any) -> None:
    with pytest.raises(grpc.RpcError) as err:
        stub.ModelInfer(grpc_request([b"ok"], raw=True), timeout=0.000001)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


# -- admission, REST and gRPC ------------------------------------------------


def test_full_queue(busy_server: Server) -> None:
    url = busy_server.url + "/v2/models/embedding/infer"
    with (
        saturated(busy_server, "embedding"),
        grpc.insecure_channel(busy_server.grpc_target) as channel,
    ):
        r = httpx.post(url, json=infer_body(["text"]))
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        request = grpc_request([b"text"], raw=False)
        request.model_name = "embedding"  # the saturated one
        with pytest.raises(grpc.RpcError) as err:
            stub.ModelInfer(request)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    too_many = httpx.post(url, json=infer_body(["text"] * (QUEUE + 1)))
    assert too_many.status_code == 400 and "holds at most" in too_many.json()["error"]


def test_not_ready(failed_server: Server) -> None:
    url = failed_server.url
    assert httpx.get(url + "/v2/health/live").status_code == 200
    r = httpx.get(url + "/v2/health/ready")
    assert r.status_code == 503 and r.json()["ready"] is False and r.json()["error"]
    assert httpx.get(url + "/v2/models/sentiment").status_code == 503
    r = httpx.get(url + "/v2/models/sentiment/ready")
    assert r.status_code == 503 and r.json()["ready"] is False
    r = httpx.post(url + "/v2/models/sentiment/infer", json=infer_body(["ok"]))
    assert r.status_code == 503 and isinstance(r.json()["error"], str)
    with grpc.insecure_channel(failed_server.grpc_target) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        assert stub.ServerLive(pb.ServerLiveRequest()).live is True
        assert stub.ServerReady(pb.ServerReadyRequest()).ready is False
        assert stub.ModelReady(pb.ModelReadyRequest(name="sentiment")).ready is False
        for call, request in [
            (stub.ModelMetadata, pb.ModelMetadataRequest(name="sentiment")),
            (stub.ModelInfer, grpc_request([b"ok"], raw=False)),
        ]:
            with pytest.raises(grpc.RpcError) as err:
                call(request)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
