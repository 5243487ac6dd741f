"""OpenAI embeddings API conformance, field by field, as raw HTTP against a real server."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

TEXTS = ["I love it, works perfectly!", "Terrible, it broke in a day."]


def test_openai_response_fields(client: httpx.Client) -> None:
    r = client.post("/v1/embeddings", json={"model": "all-MiniLM-L6-v2", "input": TEXTS})
    body = r.json()
    assert set(body) == {"object", "data", "model", "usage"}
    assert body["object"] == "list" and body["model"] == "all-MiniLM-L6-v2"
    assert [set(d) for d in body["data"]] == [{"object", "index", "embedding"}] * 2
    assert [d["index"] for d in body["data"]] == [0, 1]
    assert all(len(d["embedding"]) == 384 for d in body["data"])
    assert set(body["usage"]) == {"prompt_tokens", "total_tokens"}
    assert body["usage"]["prompt_tokens"] == body["usage"]["total_tokens"] > 4
    r = client.get("/v1/models")
    assert r.json()["object"] == "list"
    assert set(r.json()["data"][0]) == {"id", "object", "created", "owned_by"}


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        (
            {"model": "all-MiniLM-L6-v2", "input": "a", "encoding_format": "int8"},
            400,
            "encoding_format",
        ),
        ({"model": "all-MiniLM-L6-v2", "input": "a", "dimensions": True}, 400, "dimensions"),
        ({"model": "all-MiniLM-L6-v2", "input": "a", "temperature": 1}, 400, "temperature"),
        ({"model": "all-MiniLM-L6-v2", "input": "a", "user": 5}, 400, "user"),
        ({"model": "all-MiniLM-L6-v2"}, 400, "input"),
        ({"input": "a"}, 400, "model"),
        ({"model": "nope", "input": "a"}, 404, "model"),
        ({"model": "all-MiniLM-L6-v2", "input": [1, 2]}, 400, "input"),  # token ids
        ({"model": "all-MiniLM-L6-v2", "input": ["a", 1]}, 400, "input"),  # not a token array
        ([], 400, None),
    ],
)
def test_openai_errors(client: httpx.Client, body: Any, status: int, param: str | None) -> None:
    r = client.post("/v1/embeddings", json=body)
    assert r.status_code == status
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param and error["message"]
    if isinstance(body, dict) and isinstance(body.get("input"), list):
        token_ids = all(isinstance(v, int) for v in body["input"])
        assert ("token arrays" in error["message"]) == token_ids, error


def test_openai_invalid_json_keeps_the_shape(client: httpx.Client) -> None:
    r = client.post("/v1/embeddings", content=b"{oops")
    assert r.status_code == 400
    assert r.json()["error"]["type"] == "invalid_request_error"


def test_openai_wrong_method_keeps_the_shape(client: httpx.Client) -> None:
    r = client.get("/v1/embeddings")
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    assert set(r.json()["error"]) == {"message", "type", "param", "code"}
