"""The OpenAPI document of every HTTP route, and the Swagger UI page at /docs.

The document describes the running server: its limits, and its API keys when it has some.
Its paths and error answers are here; the component schemas in api/openapi_schemas.py.
"""

from __future__ import annotations

from typing import Any

from inferline import __version__
from inferline.api import chat, tensors
from inferline.api.app import Route
from inferline.api.http import Request, Send, send_bytes, send_json
from inferline.api.openai import MODEL_ID
from inferline.api.openapi_schemas import (
    INT,
    STR,
    Schema,
    array,
    content,
    obj,
    oip_schemas,
    openai_schemas,
    ref,
    simple_schemas,
    timeout_header,
)
from inferline.api.openapi_schemas import TEXT_PATTERN as TEXT_PATTERN  # noqa: PLC0414 - re-export
from inferline.auth import ApiKeys
from inferline.config import Settings

WHY = {
    400: "Invalid JSON (a syntax error, a repeated key), an empty body, or a bad header value",
    401: "No valid API key",
    404: "Unknown model or version",
    409: "The job id was used before for other inputs or another model",
    413: "Body over the size limit (compressed or inflated)",
    415: "A Content-Encoding other than gzip, deflate or identity",
    422: "Invalid input; the message names the field and the limit",
    429: "The model's queue is full, or the API key has too many requests in flight",
    431: "Headers over the size limit",
    501: "A Transfer-Encoding other than chunked",
    500: "The engine failed; the message holds an opaque id that the server log explains",
    502: "The upstream of a relayed model failed, or refused inferline's credentials",
    503: "Not ready (loading, or the load failed), shutting down, or (jobs) no Redis",
    504: "The deadline passed before the model ran the texts",
}
SPECIFIC = {
    "oip": {400: "Invalid JSON, request or tensor (the protocol answers 400 for all of them)"},
    "openai": {400: "Invalid JSON or request; 'param' names the field"},
}
HEADERS = {
    401: {"WWW-Authenticate": {"schema": {"type": "string"}}},
    429: {"Retry-After": {"description": "Seconds", "schema": {"type": "integer", "minimum": 1}}},
}


def protocol_of(path: str) -> str:
    """Which error shape a path's errors take (OpenAI's, or ``{"error": "..."}``)."""
    if path.startswith(("/v1/embeddings", "/v1/models", "/v1/chat/", "/v1/completions")):
        return "openai"
    return "oip" if path.startswith("/v2") else "plain"


def error(protocol: str, code: int) -> Schema:
    why = SPECIFIC.get(protocol, {}).get(code, WHY[code])
    response = content(ref("OpenAIError" if protocol == "openai" else "Error"), why)
    if code in HEADERS:
        response["headers"] = HEADERS[code]
    return response


def operation(summary: str, ok: Schema, **others: Schema) -> Schema:
    return {"summary": summary, "responses": {"200": ok, **others}}


TIMEOUT = timeout_header(
    "Deadline in seconds (at most ten times the server's default); texts not answered when "
    "it passes get 504."
)
INFERENCE_ERRORS = (400, 413, 422, 429, 500, 503, 504)


def post(
    summary: str, body: Schema, ok: Schema, codes: tuple[int, ...] = INFERENCE_ERRORS
) -> Schema:
    op = operation(summary, ok)
    op["parameters"] = [TIMEOUT]
    op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    op["x-errors"] = codes  # filled in per protocol by document()
    return {"post": op}


def get(summary: str, ok: Schema, *codes: int, **others: Schema) -> Schema:
    op = operation(summary, ok, **others)
    op["x-errors"] = codes
    return {"get": op}


def path_param(name: str, values: list[str], what: str) -> Schema:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": {"type": "string", "enum": values},
        "description": f"The {what}; any other is 404.",
    }


def document(settings: Settings) -> dict[str, Any]:
    paths = simple_paths() | oip_paths(settings) | openai_paths() | chat.openapi_paths()
    paths |= job_paths()
    paths["/openapi.json"] = get("This document", content({"type": "object"}, "OpenAPI 3.1"))
    html = content(STR, "HTML page", "text/html")
    paths["/docs"] = get("Swagger UI for this document", html)
    keys = ApiKeys.from_settings(settings)
    # A keys file that is empty now may be filled later, which turns keys on (auth.py).
    keyed = keys.enabled or settings.api_keys_file is not None
    for path, item in paths.items():
        protocol = protocol_of(path)
        for op in item.values():
            codes = set(op.pop("x-errors"))
            if "requestBody" in op:
                codes.add(415)  # any body may come compressed
            if keyed and not keys.is_open(path):
                op["security"] = [{"bearer": []}, {"apiKey": []}]
                codes |= {401, 429} if settings.max_concurrent_per_key else {401}
            op["responses"] |= {str(code): error(protocol, code) for code in sorted(codes)}
            op["responses"]["431"] = error("plain", 431)  # before routing: always this shape
            op["responses"]["501"] = error("plain", 501)
            op["tags"] = [protocol]
    components: Schema = {
        "schemas": simple_schemas(settings) | oip_schemas(settings) | openai_schemas(settings)
    }
    if keyed:
        components["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer"},
            "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
        }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "inferline",
            "version": __version__,
            "description": "Sentiment and sentence embeddings (all-MiniLM-L6-v2). Bodies are "
            f"read as JSON whatever their Content-Type; over {settings.max_body_bytes} bytes "
            "they get 413. An unknown path is 404, and a known path with another method 405 "
            "with Allow, in the path's error shape.",
        },
        "paths": paths,
        "components": components,
    }


# -- the simple REST API ---------------------------------------------------------------------


def simple_paths() -> Schema:
    alive = content(obj({"status": {"const": "alive"}}, "status"), "Alive")
    models = array(STR)
    ready = content(obj({"status": {"const": "ready"}, "models": models}, "status models"), "Ready")
    not_ready = obj(
        {"status": {"enum": ["starting", "failed", "draining", "upstream_down"]}, "error": STR},
        "status error",
    )
    metrics = content(STR, "Prometheus text format", "text/plain")
    return {
        "/predict": post(
            "Sentiment of one text ('text') or several ('texts')",
            {"oneOf": [obj({"text": ref("Text")}, "text"), obj({"texts": ref("Texts")}, "texts")]},
            content(ref("PredictResponse"), "Sentiment"),
        ),
        "/embed": post(
            "Sentence embeddings (mean-pooled, L2-normalised)",
            obj({"texts": ref("Texts")}, "texts"),
            content(ref("EmbedResponse"), "Embeddings, in the order of the texts"),
        ),
        "/health": get("Alive", alive),
        "/health/live": get("Alive", alive),
        "/health/ready": get("Ready to serve", ready, **{"503": content(not_ready, WHY[503])}),
        "/metrics": get("Prometheus metrics", metrics),
    }


# -- Open Inference Protocol v2 over REST ------------------------------------------------------


def oip_paths(settings: Settings) -> Schema:
    live = obj({"live": {"const": True}}, "live")
    ready = obj({"ready": {"const": True}}, "ready")
    not_ready = obj({"ready": {"const": False}, "error": STR}, "ready error")
    paths = {
        "/v2": get("Server metadata", content(ref("ServerMetadata"), "Server metadata")),
        "/v2/health/live": get("Server live", content(live, "Live")),
        "/v2/health/ready": get(
            "Server ready", content(ready, "Ready"), **{"503": content(not_ready, WHY[503])}
        ),
    }
    named = obj({"name": STR, "ready": {"const": True}}, "name ready")
    named_not_ready = obj(
        {"name": STR, "ready": {"const": False}, "error": STR}, "name ready error"
    )
    binary = {"type": "string", "format": "binary"}
    infer_ok = content(
        ref("InferResponse"),
        "The output tensors; with binary outputs asked "
        "for, the JSON (its length in Inference-Header-Content-Length) and then "
        "the raw data",
    )
    infer_ok["content"]["application/octet-stream"] = {"schema": binary}
    model = path_param("name", ["sentiment", "embedding"], "model")
    version = path_param("version", [tensors.MODEL_VERSION], "model version")
    base = "/v2/models/{name}"
    for prefix, params in ((base, [model]), (base + "/versions/{version}", [model, version])):
        items = {
            prefix: get("Model metadata", content(ref("ModelMetadata"), "Metadata"), 404, 503),
            prefix + "/ready": get(
                "Model ready",
                content(named, "Ready"),
                404,
                **{"503": content(named_not_ready, WHY[503])},
            ),
            prefix + "/infer": post(
                "Run the model", ref("InferRequest"), infer_ok, (400, 404, 413, 429, 500, 503, 504)
            ),
        }
        items[prefix + "/infer"]["post"]["description"] = (
            "The input's shape is [N], N its element count; the outputs named are the model's "
            "(sentiment: label, score, probabilities; embedding: embedding), each once. Triton's "
            "binary tensor data extension is taken too: the JSON request, with the input's "
            "'binary_data_size' parameter, then the elements (each a 4-byte little-endian "
            "length and UTF-8 bytes), and the JSON's length in Inference-Header-Content-Length."
        )
        for item in items.values():
            for op in item.values():
                op["parameters"] = [*params, *op.get("parameters", [])]
        paths |= items
    return paths


# -- the job queue -------------------------------------------------------------------------------

JOB_ID = {"type": "string", "pattern": "^[A-Za-z0-9._:-]{1,128}$"}


def job_paths() -> Schema:
    job = obj(
        {"model": {"enum": ["sentiment", "embedding"]}, "inputs": ref("Texts"), "id": JOB_ID},
        "model inputs",
    )
    outcome = obj(
        {"id": STR, "status": {"enum": ["pending", "done", "failed"]}, "model": STR},
        "id status",
        closed=False,
    )
    outcome["description"] = "Done: the model's 'results'; failed: an 'error'"
    submit = post(
        "Queue texts for a model (Redis Streams); the same 'id' again is the same job",
        job,
        content(obj({"id": JOB_ID}, "id"), "Queued"),
        (400, 409, 413, 422, 429, 503),
    )
    submit["post"].pop("parameters")  # a job's deadline is the worker's, not the request's
    submit["post"]["responses"]["202"] = submit["post"]["responses"].pop("200")
    status = get("A job's outcome", content(outcome, "The outcome"), 404, 422, 503)
    status["get"]["parameters"] = [
        {"name": "id", "in": "path", "required": True, "schema": JOB_ID, "description": "Job id"}
    ]
    return {"/v1/jobs": submit, "/v1/jobs/{id}": status}


# -- OpenAI-compatible embeddings -------------------------------------------------------------


def openai_paths() -> Schema:
    model = obj(
        {"id": STR, "object": {"const": "model"}, "created": INT, "owned_by": STR},
        "id object created owned_by",
    )
    models = obj({"object": {"const": "list"}, "data": array(model)})
    one = get("The model", content(model, "The model"), 404)
    one["get"]["parameters"] = [
        {
            "name": "model",
            "in": "path",
            "required": True,
            "schema": {"type": "string"},
            "description": f"{MODEL_ID!r} or a chat model of the models config; any other is 404.",
        }
    ]
    return {
        "/v1/embeddings": post(
            "Embeddings, as OpenAI's API makes them",
            ref("EmbeddingsRequest"),
            content(ref("EmbeddingsResponse"), "Embeddings"),
            (400, 404, 413, 429, 500, 503, 504),
        ),
        "/v1/models": get(
            "The models", content(models, f"{MODEL_ID!r}, then the relay's chat models")
        ),
        "/v1/models/{model}": one,
    }


DOCS_HTML = b"""<!doctype html>
<html><head><meta charset="utf-8"><title>inferline API</title>
<link rel="stylesheet" href="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui.css">
</head><body><div id="ui"><p>This page loads Swagger UI from cdn.jsdelivr.net. Without
it, the API is described by <a href="/openapi.json">/openapi.json</a>.</p></div>
<script src="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui-bundle.js"></script>
<script>SwaggerUIBundle({url: "/openapi.json", dom_id: "#ui"});</script>
</body></html>"""


def routes(settings: Settings) -> list[Route]:
    spec = document(settings)

    async def openapi(request: Request, send: Send) -> None:
        await send_json(send, 200, spec)

    async def docs(request: Request, send: Send) -> None:
        await send_bytes(send, 200, DOCS_HTML, [(b"content-type", b"text/html; charset=utf-8")])

    return [Route("GET", "/openapi.json", openapi), Route("GET", "/docs", docs)]
