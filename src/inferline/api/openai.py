"""OpenAI-compatible embeddings: ``POST /v1/embeddings``, ``GET /v1/models``.

Errors take OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``; invalid
requests are 400, as OpenAI answers them, and the admission codes are those of the rest of the
API.
"""

from __future__ import annotations

import base64
from typing import Any

from inferline.api.app import Route
from inferline.api.http import Request, Send, send_json
from inferline.api.validation import check_texts, deadline_of
from inferline.errors import (
    DeadlineExceeded,
    InferlineError,
    InvalidInput,
    InvalidKey,
    NotFound,
    Overloaded,
    Unavailable,
)
from inferline.service import Service

MODEL_ID = "all-MiniLM-L6-v2"
OWNER = "inferline"
FIELDS = {"input", "model", "encoding_format", "dimensions", "user"}


class RequestError(InvalidInput):
    """An invalid OpenAI request; ``param`` names the offending field."""

    def __init__(self, message: str, param: str | None = None, *, status: int = 400) -> None:
        super().__init__(message, status=status)
        self.param = param


def error_body(status: int, message: str, exc: InferlineError | None) -> dict[str, Any]:
    """OpenAI's error object for one of our errors."""
    kind, code, param = "invalid_request_error", None, getattr(exc, "param", None)
    if isinstance(exc, NotFound):
        code, param = "model_not_found", "model"
    elif isinstance(exc, InvalidKey):
        code = "invalid_api_key"
    elif isinstance(exc, Overloaded):
        kind, code = "rate_limit_error", "rate_limit_exceeded"
    elif isinstance(exc, Unavailable):
        kind, code = "server_error", "service_unavailable"
    elif isinstance(exc, DeadlineExceeded):
        kind, code = "server_error", "timeout"
    elif status >= 500:
        kind = "server_error"
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def routes(service: Service) -> list[Route]:
    settings = service.settings
    model_object = {
        "id": MODEL_ID,
        "object": "model",
        "created": _created(service),
        "owned_by": OWNER,
    }

    async def embeddings(request: Request, send: Send) -> None:
        texts, encoding = _parse(await request.json(), service)
        deadline = deadline_of(request, settings)
        try:
            _, items, rows = await service.infer("embedding", texts, deadline)
        except InvalidInput as exc:  # the token limit: 400, as OpenAI answers a bad request
            raise RequestError(str(exc), "input") from None
        if encoding == "base64":  # little-endian float32 bytes, as the OpenAI SDK decodes them
            vectors: list[Any] = [
                base64.b64encode(row.astype("<f4", copy=False).tobytes()).decode("ascii")
                for row in rows
            ]
        else:
            vectors = rows
        tokens = sum(item.tokens for item in items)
        payload = {
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": vector}
                for i, vector in enumerate(vectors)
            ],
            "model": MODEL_ID,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        await send_json(send, 200, payload)

    def listed() -> dict[str, dict[str, Any]]:
        """The embedding model, then the chat models of the models config (the relay's)."""
        chats = {name: {**model_object, "id": name} for name in sorted(service.chats)}
        return {MODEL_ID: model_object, **chats}

    async def models(request: Request, send: Send) -> None:
        await send_json(send, 200, {"object": "list", "data": list(listed().values())})

    async def model(request: Request, send: Send) -> None:
        name, known = request.path_params["model"], listed()
        if name not in known:
            raise NotFound(f"the model {name!r} does not exist; models: {', '.join(known)}")
        await send_json(send, 200, known[name])

    return [
        Route(
            "POST",
            "/v1/embeddings",
            embeddings,
            error_body,
            protocol="openai",
            queue=lambda _: service.model("embedding").batcher,  # full: refused before parsing
        ),
        Route("GET", "/v1/models", models, error_body),
        Route("GET", "/v1/models/{model:path}", model, error_body),
    ]


def _parse(body: Any, service: Service) -> tuple[list[str], str]:
    """The texts and the encoding format of an embeddings request, checked."""
    if not isinstance(body, dict):
        raise RequestError("the body must be a JSON object")
    for name in body:
        if name not in FIELDS:
            raise RequestError(f"unrecognized request argument supplied: {name}", name)
    model = body.get("model")
    if not isinstance(model, str):
        raise RequestError("'model' is required: a model id, a string", "model")
    _check_model(model)
    texts = _texts(body.get("input"), service)
    encoding = body.get("encoding_format")
    if encoding is None:
        encoding = "float"
    elif encoding not in ("float", "base64"):
        raise RequestError("'encoding_format' must be 'float' or 'base64'", "encoding_format")
    dim = service.model("embedding").engine.info.output_dim
    dimensions = body.get("dimensions")
    if dimensions is not None and (isinstance(dimensions, bool) or dimensions != dim):
        raise RequestError(
            f"'dimensions' must be {dim}: {MODEL_ID} does not shorten its vectors", "dimensions"
        )
    if not isinstance(body.get("user", ""), str):
        raise RequestError("'user' must be a string", "user")
    return texts, str(encoding)


def _check_model(name: str) -> None:
    if name != MODEL_ID:
        raise NotFound(f"the model {name!r} does not exist; the one model is {MODEL_ID!r}")


def _texts(value: Any, service: Service) -> list[str]:
    if isinstance(value, str):
        value = [value]
    elif value is None:
        raise RequestError("'input' is required: a string or a list of strings", "input")
    elif isinstance(value, list) and value and all(isinstance(v, int | list) for v in value):
        raise RequestError(
            "token arrays are not supported as 'input' (they are another tokenizer's ids); "
            "send a string or a list of strings (LangChain's OpenAIEmbeddings does with "
            "check_embedding_ctx_length=False)",
            "input",
        )
    try:
        return check_texts(value, service.settings, "input")
    except InvalidInput as exc:
        raise RequestError(str(exc), "input") from None


def _created(service: Service) -> int:
    """When the model directory was built (the manifest's time), in Unix seconds."""
    try:
        return int((service.settings.model_dir / "manifest.json").stat().st_mtime)
    except OSError:
        return 0
