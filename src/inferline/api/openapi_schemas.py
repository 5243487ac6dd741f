"""The component schemas of the OpenAPI document (api/openapi.py), and the helpers that
build them.

The schemas are exact where JSON Schema can say it, so that a request they accept is served
and one they refuse gets a 4xx; rules across fields that JSON Schema cannot state (an OIP
tensor's shape against its element count, output names per model, the body size) are in the
descriptions.
"""

from __future__ import annotations

from typing import Any

from inferline.api import tensors
from inferline.api.openai import MODEL_ID
from inferline.config import Settings

Schema = dict[str, Any]

# Python's str.isspace() characters, spelled out so that every regex dialect reads them alike.
SPACE = r"\t-\r\u001c-\u0020\u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
TEXT_PATTERN = rf"^[^\u0000]*[^\u0000{SPACE}][^\u0000]*$"  # not blank, and no NUL

STR: Schema = {"type": "string"}
INT: Schema = {"type": "integer"}
NUM: Schema = {"type": "number"}
BOOL: Schema = {"type": "boolean"}


def array(items: Schema, **limits: int) -> Schema:
    return {"type": "array", "items": items, **limits}


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def timeout_header(description: str) -> Schema:
    """The ``X-Request-Timeout`` header parameter; each route says what it bounds."""
    return {
        "name": "X-Request-Timeout",
        "in": "header",
        "schema": {"type": "number", "exclusiveMinimum": 0},
        "description": description,
    }


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


# -- the simple REST API ---------------------------------------------------------------------


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
            "description": "Not blank, without NUL, and with a character the model reads: "
            "one of only control, format or combining characters is refused (422; 400 on OIP "
            "and OpenAI), a rule this pattern does not state. Texts over the model's 256 "
            "tokens are truncated (/predict and /embed say so); a request's tokens are limited to "
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
    requested = obj({"name": {"enum": output_names}, "parameters": output_parameters}, "name")
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
                # KServe's client sends them; the URL decides which model runs.
                "model_name": STR,
                "model_version": STR,
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


# -- OpenAI-compatible embeddings -------------------------------------------------------------


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
