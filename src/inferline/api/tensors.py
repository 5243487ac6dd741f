"""The Open Inference Protocol's view of the models, shared by REST and gRPC.

Both models take one input, ``text`` (BYTES, shape [N]). ``sentiment`` gives ``label``
(BYTES [N]), ``score`` (FP32 [N]) and ``probabilities`` (FP32 [N, classes], in the order of
the manifest's labels); ``embedding`` gives ``embedding`` (FP32 [N, dim]). Every failure here
is the client's, so every error is an :class:`InvalidInput` with status 400 (gRPC
INVALID_ARGUMENT), as the protocol asks.
"""

from __future__ import annotations

import functools
import math
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from inferline import __version__
from inferline.api.validation import check_text
from inferline.config import Settings
from inferline.errors import InvalidInput, NotFound, Unavailable
from inferline.service import Service
from inferline.types import FloatArray

SERVER_NAME = "inferline"
MODEL_VERSION = "1"
PLATFORM = "onnxruntime_onnx"
INPUT = "text"
BYTES = "BYTES"
FP32 = "FP32"
EXTENSIONS = ["binary_tensor_data"]  # over REST, as Triton defines it
SHARED_MEMORY = "shared_memory_region"
LABELS_PARAMETER = "labels"  # the class names, comma-separated, in probability order
_LENGTH = struct.Struct("<I")


class BadTensor(InvalidInput):
    """A tensor or a text in it that the protocol or a limit does not allow (HTTP 400)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, status=400)


@dataclass(frozen=True, slots=True)
class TensorSpec:
    name: str
    datatype: str
    shape: tuple[int, ...]  # -1 marks a variable dimension


@dataclass(frozen=True, slots=True)
class Signature:
    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    labels: tuple[str, ...]  # sentiment's class names; empty for embedding

    def output(self, name: str) -> TensorSpec:
        for spec in self.outputs:
            if spec.name == name:
                return spec
        known = ", ".join(s.name for s in self.outputs)
        raise BadTensor(f"model {self.name!r} has no output {name!r}; outputs: {known}")


@dataclass(slots=True)
class Tensor:
    """An output tensor: FP32 data as a flat float32 array, BYTES data as strings."""

    name: str
    datatype: str
    shape: list[int]
    data: FloatArray | list[str]
    parameters: dict[str, str]


def server_metadata() -> dict[str, Any]:
    return {"name": SERVER_NAME, "version": __version__, "extensions": EXTENSIONS}


def signature(service: Service, name: str, version: str = "") -> Signature:
    """The model's tensors; NotFound for an unknown model or version, Unavailable before load."""
    manifest = service.manifest
    if manifest is None:
        raise Unavailable(service.not_ready_reason())
    if name not in service.models:
        raise NotFound(f"unknown model {name!r}; known: {', '.join(sorted(service.models))}")
    if version and version != MODEL_VERSION:
        raise NotFound(f"model {name!r} has no version {version!r}; versions: {MODEL_VERSION}")
    return _signature(name, service.models[name].engine.info.output_dim, tuple(manifest.labels))


@functools.lru_cache(maxsize=16)  # one per model: built once, not on every request
def _signature(name: str, dim: int, labels: tuple[str, ...]) -> Signature:
    text = TensorSpec(INPUT, BYTES, (-1,))
    if name == "sentiment":
        outputs = (
            TensorSpec("label", BYTES, (-1,)),
            TensorSpec("score", FP32, (-1,)),
            TensorSpec("probabilities", FP32, (-1, dim)),
        )
        return Signature(name, (text,), outputs, labels)
    return Signature(name, (text,), (TensorSpec("embedding", FP32, (-1, dim)),), ())


def model_metadata(sig: Signature) -> dict[str, Any]:
    def tensors(specs: Sequence[TensorSpec]) -> list[dict[str, Any]]:
        return [{"name": s.name, "datatype": s.datatype, "shape": list(s.shape)} for s in specs]

    body: dict[str, Any] = {
        "name": sig.name,
        "versions": [MODEL_VERSION],
        "platform": PLATFORM,
        "inputs": tensors(sig.inputs),
        "outputs": tensors(sig.outputs),
    }
    if sig.labels:
        body["parameters"] = {LABELS_PARAMETER: ",".join(sig.labels)}
    return body


def check_names(sig: Signature, names: Sequence[Any]) -> None:
    """The inputs must be exactly one tensor, ``text``."""
    for name in names:
        if name != INPUT:
            raise BadTensor(f"model {sig.name!r} has no input {name!r}; its input is {INPUT!r}")
    if not names:
        raise BadTensor(f"missing input {INPUT!r}")
    if len(names) > 1:
        raise BadTensor(f"input {INPUT!r} is given {len(names)} times")


def check_parameters(names: Iterable[str]) -> None:
    """A tensor's parameters must not ask for shared memory, which neither protocol serves
    here: over gRPC an output's data would go back in the response, where a client reading
    its region would not look."""
    if SHARED_MEMORY in names:
        raise BadTensor("shared memory tensors are not supported")


def check_header(datatype: Any, shape: Sequence[Any]) -> int:
    """Checks the ``text`` tensor's datatype and shape; returns its element count N."""
    if datatype != BYTES:
        raise BadTensor(f"input {INPUT!r} has datatype {BYTES}, not {datatype!r}")
    if len(shape) != 1 or shape[0] < 0:
        raise BadTensor(f"input {INPUT!r} has shape [N], not {list(shape)}")
    return int(shape[0])


def texts_of(values: Sequence[Any], count: int, settings: Settings) -> list[str]:
    """The texts of a BYTES tensor of ``count`` elements, checked as every protocol checks."""
    if len(values) != count:
        raise BadTensor(f"input {INPUT!r} has shape [{count}] but {len(values)} elements")
    if count == 0:
        raise BadTensor(f"input {INPUT!r} is empty")
    if count > settings.max_texts_per_request:
        raise BadTensor(
            f"input {INPUT!r} has {count} texts; "
            f"the limit is {settings.max_texts_per_request} per request"
        )
    texts = []
    for i, value in enumerate(values):
        text = value
        if isinstance(value, bytes):
            try:
                text = value.decode("utf-8")
            except UnicodeDecodeError:
                raise BadTensor(f"'{INPUT}[{i}]' is not valid UTF-8") from None
        try:
            texts.append(check_text(text, settings, f"{INPUT}[{i}]"))
        except InvalidInput as exc:
            raise BadTensor(str(exc)) from None
    return texts


def deserialize_bytes(raw: bytes) -> list[bytes]:
    """Splits a raw BYTES tensor: each element a 4-byte little-endian length, then the bytes."""
    values = []
    offset, end = 0, len(raw)
    view = memoryview(raw)
    while offset < end:
        if offset + 4 > end:
            raise BadTensor(f"raw input {INPUT!r} ends inside an element's length prefix")
        (length,) = _LENGTH.unpack_from(raw, offset)
        offset += 4
        if offset + length > end:
            raise BadTensor(f"raw input {INPUT!r} ends inside an element of {length} bytes")
        values.append(bytes(view[offset : offset + length]))
        offset += length
    return values


def serialize_bytes(values: Sequence[str]) -> bytes:
    parts = []
    for value in values:
        data = value.encode("utf-8")
        parts.append(_LENGTH.pack(len(data)))
        parts.append(data)
    return b"".join(parts)


def check_outputs(sig: Signature, requested: Sequence[str]) -> list[str]:
    """The names of the outputs to send: those requested, in order, or else every output.
    Checked before the model runs, so that a bad request costs no inference."""
    names = list(requested) or [s.name for s in sig.outputs]
    if len(set(names)) != len(names):
        raise BadTensor("an output is requested more than once")
    for name in names:
        sig.output(name)
    return names


def outputs(sig: Signature, rows: Sequence[FloatArray], names: Sequence[str]) -> list[Tensor]:
    """The output tensors ``names`` (from :func:`check_outputs`) of the model's ``rows``."""
    matrix = np.stack(rows)
    n = len(rows)
    result = []
    for name in names:
        if name == "label":
            labels = sig.labels
            data: FloatArray | list[str] = [labels[i] for i in matrix.argmax(axis=1).tolist()]
            result.append(Tensor(name, BYTES, [n], data, {}))
        elif name == "score":
            neg, pos = sig.labels.index("Negative"), sig.labels.index("Positive")
            result.append(Tensor(name, FP32, [n], matrix[:, pos] - matrix[:, neg], {}))
        else:
            params = {LABELS_PARAMETER: ",".join(sig.labels)} if name == "probabilities" else {}
            result.append(Tensor(name, FP32, list(matrix.shape), matrix.reshape(-1), params))
    return result


def raw_bytes(tensor: Tensor) -> bytes:
    """A tensor's data in the raw (binary) layout: little-endian FP32, length-prefixed BYTES."""
    if isinstance(tensor.data, list):
        return serialize_bytes(tensor.data)
    return tensor.data.astype("<f4", copy=False).tobytes()


def timeout_parameter(parameters: dict[str, Any]) -> float | None:
    """Triton's ``timeout`` request parameter (microseconds), as seconds."""
    if "timeout" not in parameters:
        return None
    value = parameters["timeout"]
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if not number or not math.isfinite(value) or value <= 0:  # NaN passes "<= 0"
        raise BadTensor("the 'timeout' parameter must be a finite, positive number of microseconds")
    # The smallest timeouts underflow to 0 s; they are still positive, and pass at once.
    return max(float(value) / 1e6, math.ulp(0.0))
