"""Hostile input over gRPC (GRPCInferenceService), against a real server with small limits
(8 texts, 2000 characters, 64 KiB messages).

Each case gets INVALID_ARGUMENT, or RESOURCE_EXHAUSTED for an oversized message; no status
shows a stack trace or a path on the server; and afterwards the server is still serving.
Messages come from Triton's client package (``tritonclient.grpc.service_pb2``): this process
must not import inferline's own generated modules, which register the same protobuf package.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc

from tests.conftest import Server
from tests.integration.leaks import assert_no_leak

INVALID = grpc.StatusCode.INVALID_ARGUMENT
NAN, INF = float("nan"), float("inf")
TOO_BIG = grpc.StatusCode.RESOURCE_EXHAUSTED
INFER = "/inference.GRPCInferenceService/ModelInfer"


@pytest.fixture(scope="module")
def channel(server: Server) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.grpc_target) as channel:
        yield channel


@pytest.fixture(scope="module")
def stub(channel: grpc.Channel) -> Any:
    return service_pb2_grpc.GRPCInferenceServiceStub(channel)


def length_prefixed(values: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(v)) + v for v in values)


def typed(*texts: bytes, shape: list[int] | None = None, datatype: str = "BYTES") -> Any:
    request = pb.ModelInferRequest(model_name="sentiment")
    tensor = request.inputs.add(name="text", datatype=datatype)
    tensor.shape.extend([len(texts)] if shape is None else shape)
    tensor.contents.bytes_contents.extend(texts)
    return request


def raw(data: bytes, shape: list[int]) -> Any:
    request = pb.ModelInferRequest(model_name="sentiment")
    request.inputs.add(name="text", datatype="BYTES", shape=shape)
    request.raw_input_contents.append(data)
    return request


def changed(request: Any, change: Callable[[Any], object]) -> Any:
    change(request)
    return request


def no_inputs() -> Any:
    return pb.ModelInferRequest(model_name="sentiment")


def with_timeout(set_value: Callable[[Any], object]) -> Any:
    request = typed(b"fine")
    set_value(request.parameters["timeout"])
    return request


CASES: dict[str, tuple[Any, grpc.StatusCode, str]] = {
    # invalid UTF-8 in BYTES elements, typed and raw
    "utf8-typed": (typed(b"ok", b"caf\xe9"), INVALID, "not valid UTF-8"),
    "utf8-overlong": (typed(b"\xc0\xaf"), INVALID, "not valid UTF-8"),
    "utf8-surrogate": (typed(b"\xed\xa0\x80"), INVALID, "not valid UTF-8"),
    "utf8-truncated": (typed(b"\xe2\x82"), INVALID, "not valid UTF-8"),
    "utf8-raw": (raw(length_prefixed([b"\xff\xfe"]), [1]), INVALID, "not valid UTF-8"),
    "nul": (typed(b"a\x00b"), INVALID, "NUL"),
    # wrong datatypes and contents
    "fp32": (
        changed(
            typed(shape=[1], datatype="FP32"),
            lambda r: r.inputs[0].contents.fp32_contents.append(1.0),
        ),
        INVALID,
        "datatype BYTES",
    ),
    "int64-contents": (
        changed(typed(shape=[1]), lambda r: r.inputs[0].contents.int64_contents.append(7)),
        INVALID,
        "bytes_contents",
    ),
    "lowercase-bytes": (typed(b"a", datatype="bytes"), INVALID, "datatype BYTES"),
    "no-datatype": (typed(b"a", datatype=""), INVALID, "datatype BYTES"),
    "wrong-name": (
        changed(typed(b"a"), lambda r: setattr(r.inputs[0], "name", "review")),
        INVALID,
        "no input",
    ),
    "two-inputs": (
        changed(typed(b"a"), lambda r: r.inputs.add(name="text", datatype="BYTES", shape=[1])),
        INVALID,
        "given 2 times",
    ),
    # shapes that do not match the data
    "shape-3-for-2": (typed(b"a", b"b", shape=[3]), INVALID, "shape [3] but 2"),
    "shape-2d": (typed(b"a", shape=[1, 1]), INVALID, "shape [N]"),
    "shape-scalar": (typed(b"a", shape=[]), INVALID, "shape [N]"),
    "shape-negative": (typed(b"a", shape=[-1]), INVALID, "shape [N]"),
    "shape-2^62": (typed(b"a", shape=[2**62]), INVALID, "but 1 elements"),
    "raw-shape-mismatch": (raw(length_prefixed([b"a", b"b"]), [1]), INVALID, "shape [1] but 2"),
    "raw-length-4gb": (raw(struct.pack("<I", 2**32 - 1) + b"ab", [1]), INVALID, "ends inside"),
    "raw-half-prefix": (raw(b"\x01\x00", [1]), INVALID, "length prefix"),
    # too much: texts, characters, bytes
    "texts-9": (typed(*[b"a"] * 9), INVALID, "limit is 8"),
    "text-2001-chars": (typed(b"a" * 2001), INVALID, "limit is 2000"),
    "message-100kb": (typed(b"a" * 100_000), TOO_BIG, "larger than max"),
    "raw-100kb": (raw(length_prefixed([b"a" * 100_000]), [1]), TOO_BIG, "larger than max"),
    # empty inputs
    "no-inputs": (no_inputs(), INVALID, "missing input"),
    "no-elements": (typed(), INVALID, "is empty"),
    "empty-text": (typed(b""), INVALID, "is empty"),
    "blank-text": (typed(b" \t\n\xc2\xa0"), INVALID, "is empty"),
    "empty-raw": (raw(b"", [0]), INVALID, "is empty"),
    "zero-width": (typed("\u200b".encode()), INVALID, "nothing the model reads"),
    # a deadline parameter that is not a positive number of microseconds
    "timeout-negative": (with_timeout(lambda p: setattr(p, "int64_param", -5)), INVALID, "timeout"),
    "timeout-zero": (with_timeout(lambda p: setattr(p, "int64_param", 0)), INVALID, "timeout"),
    "timeout-nan": (with_timeout(lambda p: setattr(p, "double_param", NAN)), INVALID, "timeout"),
    "timeout-inf": (with_timeout(lambda p: setattr(p, "double_param", INF)), INVALID, "timeout"),
    "timeout-bool": (with_timeout(lambda p: setattr(p, "bool_param", True)), INVALID, "timeout"),
    "timeout-string": (with_timeout(lambda p: setattr(p, "string_param", "9")), INVALID, "timeout"),
    "timeout-unset": (with_timeout(lambda p: p.Clear()), INVALID, "timeout"),
    # shared memory: the data would come back in the response, not in the client's region
    "shm-input": (
        changed(
            raw(b"", [1]),
            lambda r: setattr(r.inputs[0].parameters["shared_memory_region"], "string_param", "r"),
        ),
        INVALID,
        "shared memory",
    ),
    "shm-output": (
        changed(
            typed(b"fine"),
            lambda r: setattr(
                r.outputs.add(name="score").parameters["shared_memory_region"], "string_param", "r"
            ),
        ),
        INVALID,
        "shared memory",
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_hostile_tensor_gets_its_status(stub: Any, name: str) -> None:
    request, code, message = CASES[name]
    with pytest.raises(grpc.RpcError) as err:
        stub.ModelInfer(request, timeout=30)
    assert err.value.code() == code, err.value.details()
    details = str(err.value.details())
    assert message in details
    assert_no_leak(details)


@pytest.mark.parametrize(
    "message",
    [b"\x0a\x03\xff\xfe\xfd", b"\xff\xff\xff\xff\x0f garbage"],
    ids=["utf8-model-name", "garbage"],
)
def test_an_unparseable_message_is_invalid_argument(channel: grpc.Channel, message: bytes) -> None:
    call = channel.unary_unary(INFER, request_serializer=bytes, response_deserializer=bytes)
    with pytest.raises(grpc.RpcError) as err:
        call(message, timeout=30)
    assert err.value.code() == INVALID
    assert_no_leak(str(err.value.details()))


def test_the_server_still_serves(stub: Any, channel: grpc.Channel) -> None:
    garbage = channel.unary_unary(INFER, request_serializer=bytes, response_deserializer=bytes)
    with pytest.raises(grpc.RpcError):
        garbage(b"\xff\xff\xff\xff\x0f", timeout=30)
    assert stub.ServerReady(pb.ServerReadyRequest(), timeout=30).ready
    response = stub.ModelInfer(typed(b"Works great.", b"Broke in a day."), timeout=30)
    assert list(response.outputs[0].contents.bytes_contents) == [b"Positive", b"Negative"]
