"""How the OIP engine reads an upstream's answer: every float type, raw or typed, and a clear
EngineError for anything else, never numbers read from the wrong type."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

# Triton's client protos: the same messages as inferline's own, which cannot be loaded in a
# process that loads these (both define package 'inference'), and tests use tritonclient.
from tritonclient.grpc import service_pb2 as pb

from inferline.engines.oip import _grpc_error, _parse_grpc, _parse_rest
from inferline.errors import EngineError

VALUES = np.array([[0.25, -1.5], [3.0, 0.125]])  # exact in FP16, FP32 and FP64


def grpc_answer(datatype: str, raw: bytes | None = None, **typed: list[float]) -> object:
    tensor = pb.ModelInferResponse.InferOutputTensor(
        name="probabilities",
        datatype=datatype,
        shape=[2, 2],
        contents=pb.InferTensorContents(**typed),
    )
    return pb.ModelInferResponse(outputs=[tensor], raw_output_contents=[raw] if raw else [])


@pytest.mark.parametrize(("datatype", "dtype"), [("FP16", "<f2"), ("FP32", "<f4"), ("FP64", "<f8")])
def test_raw_floats_of_each_width(datatype: str, dtype: str) -> None:
    answer = grpc_answer(datatype, VALUES.astype(dtype).tobytes())
    np.testing.assert_array_equal(_parse_grpc(answer, "probabilities"), VALUES)


def test_typed_fp32_and_fp64_contents() -> None:
    flat = VALUES.ravel().tolist()
    for answer in (
        grpc_answer("FP32", fp32_contents=flat),
        grpc_answer("FP64", fp64_contents=flat),
    ):
        np.testing.assert_array_equal(_parse_grpc(answer, "probabilities"), VALUES)


def test_other_types_and_bad_sizes_are_engine_errors() -> None:
    ints = grpc_answer("INT32", np.arange(4, dtype="<i4").tobytes())
    with pytest.raises(EngineError, match="is INT32, not one of FP32, FP16, FP64"):
        _parse_grpc(ints, "probabilities")
    with pytest.raises(EngineError, match="'probabilities' from the upstream"):
        _parse_grpc(grpc_answer("FP32", b"\0" * 15), "probabilities")  # not whole floats
    with pytest.raises(EngineError, match="no output 'embeddings'"):
        _parse_grpc(grpc_answer("FP32", fp32_contents=[0.0] * 4), "embeddings")


def test_values_past_fp32_read_as_inf_for_the_engine_to_refuse() -> None:
    """No overflow warning (an error under pytest's settings, noise in a log): OipEngine
    refuses every value that is not finite."""
    answer = grpc_answer("FP64", fp64_contents=[1e300, 0.0, 0.0, 0.0])
    assert np.isinf(_parse_grpc(answer, "probabilities")[0, 0])
    tensor = {"name": "probabilities", "datatype": "FP64", "shape": [2, 2]}
    raw = np.array([1e300, 0.0, 0.0, 0.0]).astype("<f8").tobytes()
    header = orjson.dumps({"outputs": [tensor | {"parameters": {"binary_data_size": len(raw)}}]})
    assert np.isinf(_parse_rest(header + raw, str(len(header)), "probabilities")[0, 0])


def test_rest_answers_json_and_binary() -> None:
    tensor = {"name": "probabilities", "datatype": "FP64", "shape": [2, 2]}
    as_json = orjson.dumps({"outputs": [tensor | {"data": VALUES.ravel().tolist()}]})
    np.testing.assert_array_equal(_parse_rest(as_json, None, "probabilities"), VALUES)
    raw = VALUES.astype("<f8").tobytes()
    binary = tensor | {"parameters": {"binary_data_size": len(raw)}}
    header = orjson.dumps({"outputs": [binary]})
    answer = _parse_rest(header + raw, str(len(header)), "probabilities")
    np.testing.assert_array_equal(answer, VALUES)
    ints = orjson.dumps({"outputs": [tensor | {"datatype": "INT64", "data": [1, 2, 3, 4]}]})
    with pytest.raises(EngineError, match="is INT64"):
        _parse_rest(ints, None, "probabilities")


def test_grpcs_own_details_of_an_unreachable_upstream_stay_out_of_the_message() -> None:
    from grpc import StatusCode
    from grpc.aio import AioRpcError, Metadata

    from inferline.engines.remote import Retry

    details = "failed to connect to all addresses; last error: ipv4:10.1.2.3:8001: refused"
    cause = AioRpcError(StatusCode.UNAVAILABLE, Metadata(), Metadata(), details, None)
    error = _grpc_error(cause, "the upstream of model 'embedding'")
    assert isinstance(error, Retry)
    message = "the upstream of model 'embedding' is unreachable or unavailable (UNAVAILABLE)"
    assert str(error.error) == message
    # Nor do an upstream's own words (a stack trace, its addresses): they go to the log.
    leak = 'Traceback (most recent call last):\n  File "/srv/triton/backend.py"\n10.1.2.3:8001'
    for code in ("RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED", "INVALID_ARGUMENT", "INTERNAL"):
        refusal = AioRpcError(getattr(StatusCode, code), Metadata(), Metadata(), leak, None)
        error = _grpc_error(refusal, "the upstream of model 'embedding'")
        shown = error.error if isinstance(error, Retry) else error
        assert str(shown) == f"the upstream of model 'embedding' answered {code}"
