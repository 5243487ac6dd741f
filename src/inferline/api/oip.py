"""Open Inference Protocol v2 over REST: health, metadata and inference under ``/v2``.

Tensor data travels as JSON or, with Triton's binary tensor data extension (what
``tritonclient.http`` sends by default), as raw bytes after a JSON header whose length is in
``Inference-Header-Content-Length``. Errors are ``{"error": "..."}``: 400 for a bad tensor,
404 for an unknown model or version, and the admission codes of the rest of the API.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import orjson

from inferline.api import tensors
from inferline.api.app import Route
from inferline.api.framing import byte_count
from inferline.api.http import DUMP_OPTIONS, Request, Send, parse_json, send_bytes, send_json
from inferline.api.tensors import BadTensor, Signature, Tensor
from inferline.api.validation import deadline_of
from inferline.batching import Batcher
from inferline.errors import InvalidInput, Unavailable
from inferline.service import Service

HEADER_LENGTH = b"inference-header-content-length"
REQUEST_FIELDS = {"id", "parameters", "inputs", "outputs"}
# KServe's client (kserve.InferRequest.to_rest) also names the model in the body.
ROUTE_FIELDS = {"model_name", "model_version"}
INPUT_FIELDS = {"name", "shape", "datatype", "parameters", "data"}
OUTPUT_FIELDS = {"name", "parameters"}


def routes(service: Service) -> list[Route]:
    settings = service.settings

    async def live(request: Request, send: Send) -> None:
        await send_json(send, 200, {"live": True})

    async def ready(request: Request, send: Send) -> None:
        if service.ready:
            await send_json(send, 200, {"ready": True})
        else:
            await send_json(send, 503, {"ready": False, "error": service.not_ready_reason()})

    async def server_metadata(request: Request, send: Send) -> None:
        await send_json(send, 200, tensors.server_metadata())

    async def model_metadata(request: Request, send: Send) -> None:
        sig = _signature(service, request)
        await send_json(send, 200, tensors.model_metadata(sig))

    async def model_ready(request: Request, send: Send) -> None:
        name = request.path_params["name"]
        with contextlib.suppress(Unavailable):  # not loaded: not ready, below
            _signature(service, request)  # 404 for an unknown model or version
        if service.model_ready(name):
            await send_json(send, 200, {"name": name, "ready": True})
        else:
            body = {"name": name, "ready": False, "error": service.not_ready_reason(name)}
            await send_json(send, 503, body)

    async def infer(request: Request, send: Send) -> None:
        sig = _signature(service, request)
        body, binary = await _read(request)
        _check_route_fields(body)
        parameters = _object(body.get("parameters", {}), "parameters")
        texts = tensors.texts_of(*_input(sig, body.get("inputs"), binary), settings)
        requested, binary_out = _requested(body.get("outputs", []), parameters)
        names = tensors.check_outputs(sig, requested)
        deadline = deadline_of(request, settings, tensors.timeout_parameter(parameters))
        try:
            _, _, rows = await service.infer(sig.name, texts, deadline)
        except InvalidInput as exc:  # the token limit: a bad request, 400 as the protocol asks
            raise BadTensor(str(exc)) from None
        result = tensors.outputs(sig, rows, names)
        await _respond(send, sig, body.get("id"), result, binary_out)

    def queue(params: dict[str, str]) -> Batcher:
        # A full queue refuses before the body is read, as on the other protocols; an unknown
        # model or version is still 404 first.
        tensors.signature(service, params["name"], params.get("version", ""))
        return service.model(params["name"]).batcher

    base = "/v2/models/{name}"
    version = base + "/versions/{version}"
    return [
        Route("GET", "/v2", server_metadata),
        Route("GET", "/v2/health/live", live),
        Route("GET", "/v2/health/ready", ready),
        Route("GET", base, model_metadata),
        Route("GET", version, model_metadata),
        Route("GET", base + "/ready", model_ready),
        Route("GET", version + "/ready", model_ready),
        Route("POST", base + "/infer", infer, protocol="oip_rest", queue=queue),
        Route("POST", version + "/infer", infer, protocol="oip_rest", queue=queue),
    ]


def _signature(service: Service, request: Request) -> Signature:
    params = request.path_params
    return tensors.signature(service, params["name"], params.get("version", ""))


async def _read(request: Request) -> tuple[dict[str, Any], memoryview]:
    """The JSON request object, and the binary tensor data after it (often empty)."""
    raw = await request.body()
    header = request.header(HEADER_LENGTH)
    size = len(raw)
    if header is not None:
        declared = byte_count(header)
        if declared is None or declared > len(raw):
            raise BadTensor(
                f"Inference-Header-Content-Length must be a byte count of at most {len(raw)}"
            )
        size = declared
    view = memoryview(raw)
    if size == 0:
        raise BadTensor("the body is empty; send an inference request object")
    body = parse_json(view[:size])
    if not isinstance(body, dict):
        raise BadTensor("the body must be a JSON object")
    unknown = sorted(set(body) - REQUEST_FIELDS - ROUTE_FIELDS)
    if unknown:
        raise BadTensor(f"unknown field(s): {', '.join(unknown)}")
    if "id" in body and not isinstance(body["id"], str):
        raise BadTensor("'id' must be a string")
    return body, view[size:]


def _check_route_fields(body: dict[str, Any]) -> None:
    """``model_name`` and ``model_version`` in the body are accepted, as strings, and the URL
    decides, as KServe's and Triton's servers do."""
    for field in ROUTE_FIELDS:
        if field in body and not isinstance(body[field], str):
            raise BadTensor(f"'{field}' must be a string (the URL names the model)")


def _object(value: Any, field: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BadTensor(f"'{field}' must be an object")
    return value


def _input(sig: Signature, inputs: Any, binary: memoryview) -> tuple[Sequence[Any], int]:
    """The ``text`` tensor's elements (strings, or bytes from binary data) and its count."""
    if not isinstance(inputs, list):
        raise BadTensor("'inputs' must be a list of tensors")
    for tensor in inputs:
        _object(tensor, "inputs[]")
    tensors.check_names(sig, [t.get("name") for t in inputs])
    (tensor,) = inputs
    unknown = sorted(set(tensor) - INPUT_FIELDS)
    if unknown:
        raise BadTensor(f"unknown field(s) in input {tensors.INPUT!r}: {', '.join(unknown)}")
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not all(_is_int(d) for d in shape):
        raise BadTensor(f"input {tensors.INPUT!r} needs 'shape', a list of integers")
    count = tensors.check_header(tensor.get("datatype"), [int(d) for d in shape])
    parameters = _object(tensor.get("parameters", {}), "parameters")
    tensors.check_parameters(parameters)
    if "binary_data_size" in parameters:
        size = parameters["binary_data_size"]
        if "data" in tensor:
            raise BadTensor(f"input {tensors.INPUT!r} has both 'data' and binary data")
        if not _is_int(size) or size != len(binary):
            raise BadTensor(
                f"binary_data_size of input {tensors.INPUT!r} is {size!r}, "
                f"but {len(binary)} bytes of binary data follow the header"
            )
        return tensors.deserialize_bytes(bytes(binary)), count
    if binary:
        raise BadTensor(f"{len(binary)} bytes of binary data follow, but no input claims them")
    data = tensor.get("data")
    if not isinstance(data, list):
        raise BadTensor(f"input {tensors.INPUT!r} needs 'data', a list of strings")
    return data, count


def _requested(outputs: Any, parameters: dict[str, Any]) -> tuple[list[str], dict[str, bool]]:
    """The requested output names, and for each name whether it goes back as binary data."""
    default = parameters.get("binary_data_output", False)
    if not isinstance(default, bool):
        raise BadTensor("the 'binary_data_output' parameter must be a boolean")
    if not isinstance(outputs, list):
        raise BadTensor("'outputs' must be a list")
    names: list[str] = []
    binary = {"*": default}
    for item in outputs:
        output = _object(item, "outputs[]")
        name = output.get("name")
        if not isinstance(name, str):
            raise BadTensor("each output needs a 'name', a string")
        unknown = sorted(set(output) - OUTPUT_FIELDS)
        if unknown:
            raise BadTensor(f"unknown field(s) in output {name!r}: {', '.join(unknown)}")
        params = _object(output.get("parameters", {}), f"outputs[{name!r}].parameters")
        class_count = params.get("class_count", 0)
        if isinstance(class_count, bool) or class_count != 0:
            raise BadTensor("the classification extension (class_count) is not supported")
        tensors.check_parameters(params)
        flag = params.get("binary_data", default)
        if not isinstance(flag, bool):
            raise BadTensor(f"'binary_data' of output {name!r} must be a boolean")
        names.append(name)
        binary[name] = flag
    return names, binary


async def _respond(
    send: Send, sig: Signature, request_id: Any, outputs: list[Tensor], binary: dict[str, bool]
) -> None:
    body: dict[str, Any] = {"model_name": sig.name, "model_version": tensors.MODEL_VERSION}
    if request_id is not None:
        body["id"] = request_id
    chunks: list[bytes] = []
    described = []
    for tensor in outputs:
        entry: dict[str, Any] = {
            "name": tensor.name,
            "datatype": tensor.datatype,
            "shape": tensor.shape,
        }
        parameters: dict[str, Any] = dict(tensor.parameters)
        if binary.get(tensor.name, binary["*"]):
            chunk = tensors.raw_bytes(tensor)
            chunks.append(chunk)
            parameters["binary_data_size"] = len(chunk)
        else:
            entry["data"] = tensor.data
        if parameters:
            entry["parameters"] = parameters
        described.append(entry)
    body["outputs"] = described
    if not chunks:
        await send_json(send, 200, body)
        return
    header = orjson.dumps(body, option=DUMP_OPTIONS)
    await send_bytes(
        send,
        200,
        b"".join([header, *chunks]),
        [
            (b"content-type", b"application/octet-stream"),
            (HEADER_LENGTH, str(len(header)).encode()),
        ],
    )


def _is_int(value: Any) -> bool:
    """An integer, as JSON Schema counts them: 2 and 2.0, not true."""
    if isinstance(value, float):
        return value.is_integer()
    return isinstance(value, int) and not isinstance(value, bool)
