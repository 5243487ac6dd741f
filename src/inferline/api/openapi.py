"""The OpenAPI document of every HTTP route, and the Swagger UI page at /docs.

The document describes the running server: its limits, and its API keys when it has some.
The schemas are exact where JSON Schema can say it, so that a request they accept is served
and one they refuse gets a 4xx; rules across fields that JSON Schema cannot state (an OIP
tensor's shape against its element count, output names per model, the body size) are in the
descriptions.
"""

from __future__ import annotations

from typing import Any

from inferline import __version__
from inferline.api import chat, tensors
from inferline.api.app import Route
from inferline.api.http import Request, Send, send_bytes, send_json
from inferline.api.openai import MODEL_ID
from inferline.auth import ApiKeys
from inferline.config import Settings

Schema = dict[str, Any]

# Python's str.isspace() characters, spelled out so that every regex dialect reads them alike.
SPACE = r"\t-\r\u001c-\u0020\u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
TEXT_PATTERN = rf"^[^\u0000]*[^\u0000{SPACE}][^\u0000]*$"  # not blank, and no NUL

WHY = {
    400: "Invalid JSON (a syntax error, a repeated key), an empty body, or a bad header value",
    401: "No valid API key",
    404: "Unknown model or version",
    413: "Body over the size limit",
    422: "Invalid input; the message names the field and the limit",
    429: "The model's queue is full, or the API key has too many requests in flight",
    431: "Headers over the size limit",
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


STR: Schema = {"type": "string"}
INT: Schema = {"type": "integer"}
NUM: Schema = {"type": "number"}
BOOL: Schema = {"type": "boolean"}


def array(items: Schema, **limits: int) -> Schema:
    return {"type": "array", "items": items, **limits}


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def obj(properties: Schema, required: str = "", closed: bool = True) -> Schema:
    """An object schema; ``required`` names the required properties, separated by spaces."""
    schema: Schema = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required.split()
    if closed:
        schema["additionalProperties"] = False
    return schema


def content(schema: Schema, description: str, media: str = "application/json") -> Schema:
    return {"description": description, "content": {media: {"schema": schema}}}


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


TIMEOUT = {
    "name": "X-Request-Timeout",
    "in": "header",
    "schema": {"type": "number", "exclusiveMinimum": 0},
    "description": "Deadline in seconds (at most ten times the server's default); texts "
    "still queued when it passes get 504.",
}
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
    for path, item in paths.items():
        protocol = protocol_of(path)
        for op in item.values():
            codes = set(op.pop("x-errors"))
            if keys.enabled and not keys.is_open(path):
                op["security"] = [{"bearer": []}, {"apiKey": []}]
                codes |= {401, 429} if settings.max_concurrent_per_key else {401}
            op["responses"] |= {str(code): error(protocol, code) for code in sorted(codes)}
            op["responses"]["431"] = error("plain", 431)  # before routing: always this shape
            op["tags"] = [protocol]
    components: Schema = {
        "schemas": simple_schemas(settings) | oip_schemas(settings) | openai_schemas(settings)
    }
    if keys.enabled:
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


def simple_schemas(settings: Settings) -> Schema:
    sentiment = obj(
        {
            "label": {"enum": ["Negative", "Neutral", "Positive"]},
            "score": {"type": "number", "minimum": -1, "maximum": 1},
            "probabilities": {"type": "object", "additionalProperties": NUM},
            "truncated": BOOL,
        },
        "label score probabilities truncated",
    )
    vectors = array(array(NUM))
    return {
        "Text": {
            "type": "string",
            "maxLength": settings.max_text_chars,
            "pattern": TEXT_PATTERN,
            "description": "Not blank, without NUL. Texts over the model's 256 tokens are "
            "truncated, and the response says so; a request's tokens are limited to "
            f"{settings.max_request_tokens}.",
        },
        "Texts": {
            "type": "array",
            "minItems": 1,
            "maxItems": settings.max_texts_per_request,
            "items": ref("Text"),
        },
        "Error": obj({"error": STR}, "error"),
        "Sentiment": sentiment,
        "PredictResponse": {
            "oneOf": [ref("Sentiment"), obj({"results": array(ref("Sentiment"))}, "results")]
        },
        "EmbedResponse": obj(
            {"embeddings": vectors, "dimensions": INT, "truncated": array(BOOL)},
            "embeddings dimensions truncated",
        ),
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


def oip_schemas(settings: Settings) -> Schema:
    tensor = obj({"name": STR, "datatype": STR, "shape": array(INT)}, "name datatype shape")
    count = {"type": "integer", "minimum": 1, "maximum": settings.max_texts_per_request}
    no_binary = {
        "not": {
            "anyOf": [{"required": ["binary_data_size"]}, {"required": ["shared_memory_region"]}]
        }
    }
    text_input = obj(
        {
            "name": {"const": tensors.INPUT},
            "datatype": {"const": tensors.BYTES},
            "shape": {"type": "array", "prefixItems": [count], "minItems": 1, "maxItems": 1},
            "data": ref("Texts"),
            "parameters": {"type": "object", **no_binary},
        },
        "name datatype shape data",
    )
    output_parameters = {
        "type": "object",
        "properties": {"binary_data": BOOL, "class_count": {"const": 0}},
        "not": {"required": ["shared_memory_region"]},
    }
    output_names = ["label", "score", "probabilities", "embedding"]
    requested = obj(
        {"name": {"enum": output_names}, "parameters": output_parameters}, "name", closed=False
    )
    parameters = {
        "type": "object",
        "properties": {
            "timeout": {
                "type": "number",
                "exclusiveMinimum": 0,
                "description": "Deadline in microseconds, as Triton sends it",
            },
            "binary_data_output": BOOL,
        },
    }
    output = obj(
        {
            "name": STR,
            "datatype": {"enum": [tensors.BYTES, tensors.FP32]},
            "shape": array(INT),
            "data": {"type": "array", "items": {"type": ["string", "number"]}},
            "parameters": {"type": "object"},
        },
        "name datatype shape",
    )
    strings = array(STR)
    return {
        "ServerMetadata": obj(
            {"name": STR, "version": STR, "extensions": strings}, "name version extensions"
        ),
        "ModelMetadata": obj(
            {
                "name": STR,
                "versions": strings,
                "platform": STR,
                "inputs": array(tensor),
                "outputs": array(tensor),
                "parameters": {"type": "object", "additionalProperties": STR},
            },
            "name versions platform inputs outputs",
        ),
        "InferRequest": obj(
            {
                "id": STR,
                "parameters": parameters,
                "inputs": {"type": "array", "items": text_input, "minItems": 1, "maxItems": 1},
                "outputs": array(requested),
            },
            "inputs",
        ),
        "InferResponse": obj(
            {"model_name": STR, "model_version": STR, "id": STR, "outputs": array(output)},
            "model_name model_version outputs",
        ),
    }


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
        (400, 413, 422, 429, 503),
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
        {"id": {"const": MODEL_ID}, "object": {"const": "model"}, "created": INT, "owned_by": STR},
        "id object created owned_by",
    )
    models = obj({"object": {"const": "list"}, "data": array(model)})
    one = get("The model", content(model, "The model"), 404)
    one["get"]["parameters"] = [path_param("model", [MODEL_ID], "model id")]
    return {
        "/v1/embeddings": post(
            "Embeddings, as OpenAI's API makes them",
            ref("EmbeddingsRequest"),
            content(ref("EmbeddingsResponse"), "Embeddings"),
            (400, 404, 413, 429, 500, 503, 504),
        ),
        "/v1/models": get("The models", content(models, "The one model")),
        "/v1/models/{model}": one,
    }


def openai_schemas(settings: Settings) -> Schema:
    nullable = {"type": ["string", "null"]}
    error = obj(
        {"message": STR, "type": STR, "param": nullable, "code": nullable},
        "message type param code",
    )
    vector = {
        "oneOf": [array(NUM), {"type": "string", "description": "base64 of little-endian float32"}]
    }
    embedding = obj(
        {"object": {"const": "embedding"}, "index": INT, "embedding": vector},
        "object index embedding",
    )
    usage = obj({"prompt_tokens": INT, "total_tokens": INT}, "prompt_tokens total_tokens")
    return {
        "OpenAIError": obj({"error": error}, "error"),
        "EmbeddingsRequest": obj(
            {
                "input": {
                    "oneOf": [ref("Text"), ref("Texts")],
                    "description": "A text or a list of texts; token arrays are refused",
                },
                "model": {"enum": [MODEL_ID], "description": "Another model id is 404"},
                "encoding_format": {"enum": ["float", "base64", None]},
                "dimensions": {"enum": [384, None], "description": "Vectors are not shortened"},
                "user": STR,
            },
            "input model",
        ),
        "EmbeddingsResponse": obj(
            {
                "object": {"const": "list"},
                "data": array(embedding),
                "model": {"const": MODEL_ID},
                "usage": usage,
            },
            "object data model usage",
        ),
    }


DOCS_HTML = b"""<!doctype html>
<html><head><meta charset="utf-8"><title>inferline API</title>
<link rel="stylesheet" href="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui.css">
</head><body><div id="ui"></div>
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
