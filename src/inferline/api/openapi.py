"""The OpenAPI document of the REST API, and the Swagger UI page at /docs."""

from __future__ import annotations

from typing import Any

from inferline import __version__
from inferline.api.app import Route
from inferline.api.http import Request, Send, send_bytes, send_json
from inferline.config import Settings

ERROR = {"$ref": "#/components/schemas/Error"}


def _texts(settings: Settings) -> dict[str, Any]:
    return {
        "type": "array",
        "minItems": 1,
        "maxItems": settings.max_texts_per_request,
        "items": {"$ref": "#/components/schemas/Text"},
    }


def _errors(*codes: int) -> dict[str, Any]:
    text = {
        400: "Invalid JSON or header",
        404: "Unknown model",
        413: "Body over the size limit",
        422: "Invalid input; the message names the field and the limit",
        429: "Queue full; see Retry-After",
        503: "Not ready, or shutting down",
        504: "Deadline passed before the model ran",
    }
    return {
        str(c): {"description": text[c], "content": {"application/json": {"schema": ERROR}}}
        for c in codes
    }


def _post(summary: str, body: dict[str, Any], ok: str) -> dict[str, Any]:
    return {
        "summary": summary,
        "parameters": [
            {
                "name": "X-Request-Timeout",
                "in": "header",
                "required": False,
                "schema": {"type": "number", "exclusiveMinimum": 0},
                "description": "Deadline in seconds; texts still queued then get 504.",
            }
        ],
        "requestBody": {"required": True, "content": {"application/json": {"schema": body}}},
        "responses": {
            "200": {
                "description": "OK",
                "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ok}"}}},
            },
            **_errors(400, 413, 422, 429, 503, 504),
        },
    }


def _health(summary: str, codes: tuple[int, ...] = ()) -> dict[str, Any]:
    ok = {"description": "OK", "content": {"application/json": {"schema": {"type": "object"}}}}
    return {"get": {"summary": summary, "responses": {"200": ok, **_errors(*codes)}}}


def document(settings: Settings) -> dict[str, Any]:
    sentiment = {
        "type": "object",
        "required": ["label", "score", "probabilities", "truncated"],
        "properties": {
            "label": {"type": "string", "enum": ["Negative", "Neutral", "Positive"]},
            "score": {"type": "number", "minimum": -1, "maximum": 1},
            "probabilities": {"type": "object", "additionalProperties": {"type": "number"}},
            "truncated": {"type": "boolean"},
        },
    }
    return {
        "openapi": "3.0.3",
        "info": {"title": "inferline", "version": __version__},
        "paths": {
            "/predict": {
                "post": _post(
                    "Sentiment of one text ('text') or several ('texts')",
                    {
                        "oneOf": [
                            {
                                "type": "object",
                                "required": ["text"],
                                "additionalProperties": False,
                                "properties": {"text": {"$ref": "#/components/schemas/Text"}},
                            },
                            {
                                "type": "object",
                                "required": ["texts"],
                                "additionalProperties": False,
                                "properties": {"texts": _texts(settings)},
                            },
                        ]
                    },
                    "PredictResponse",
                )
            },
            "/embed": {
                "post": _post(
                    "Sentence embeddings (mean-pooled, L2-normalised, 384 dimensions)",
                    {
                        "type": "object",
                        "required": ["texts"],
                        "additionalProperties": False,
                        "properties": {"texts": _texts(settings)},
                    },
                    "EmbedResponse",
                )
            },
            "/health": _health("Alive"),
            "/health/live": _health("Alive"),
            "/health/ready": _health("Ready to serve (model loaded and warmed up)", (503,)),
        },
        "components": {
            "schemas": {
                "Text": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": settings.max_text_chars,
                    "pattern": r"\S",
                },
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {"error": {"type": "string"}},
                },
                "Sentiment": sentiment,
                "PredictResponse": {
                    "oneOf": [
                        {"$ref": "#/components/schemas/Sentiment"},
                        {
                            "type": "object",
                            "required": ["results"],
                            "properties": {
                                "results": {
                                    "type": "array",
                                    "items": {"$ref": "#/components/schemas/Sentiment"},
                                }
                            },
                        },
                    ]
                },
                "EmbedResponse": {
                    "type": "object",
                    "required": ["embeddings", "dimensions", "truncated"],
                    "properties": {
                        "embeddings": {
                            "type": "array",
                            "items": {"type": "array", "items": {"type": "number"}},
                        },
                        "dimensions": {"type": "integer"},
                        "truncated": {"type": "array", "items": {"type": "boolean"}},
                    },
                },
            }
        },
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
