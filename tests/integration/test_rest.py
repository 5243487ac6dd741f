"""The REST API against a real server running the real model."""

from __future__ import annotations

import math

import httpx
import pytest


def test_predict_one_text(client: httpx.Client) -> None:
    r = client.post(
        "/predict", json={"text": "I absolutely love this camera, the pictures are stunning."}
    )
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"label", "score", "probabilities", "truncated"}
    assert body["label"] == "Positive"
    probs = body["probabilities"]
    assert list(probs) == ["Negative", "Neutral", "Positive"]
    assert math.isclose(sum(probs.values()), 1.0, abs_tol=1e-4)
    assert math.isclose(body["score"], probs["Positive"] - probs["Negative"], abs_tol=1e-4)
    assert -1 <= body["score"] <= 1
    assert body["truncated"] is False


def test_predict_many_texts_keeps_order(client: httpx.Client) -> None:
    texts = ["This is the worst purchase I have ever made.", "Great value, works perfectly!"]
    r = client.post("/predict", json={"texts": texts})
    assert r.status_code == 200
    labels = [x["label"] for x in r.json()["results"]]
    assert labels == ["Negative", "Positive"]
    single = client.post("/predict", json={"text": texts[1]}).json()
    assert math.isclose(single["score"], r.json()["results"][1]["score"], abs_tol=0.05)


def test_embed_returns_unit_vectors(client: httpx.Client) -> None:
    r = client.post("/embed", json={"texts": ["a red bicycle", "a crimson bike", "tax law reform"]})
    assert r.status_code == 200
    body = r.json()
    assert body["dimensions"] == 384 and body["truncated"] == [False] * 3
    vecs = body["embeddings"]
    assert len(vecs) == 3 and all(len(v) == 384 for v in vecs)
    for v in vecs:
        assert math.isclose(math.sqrt(sum(x * x for x in v)), 1.0, abs_tol=1e-3)

    def cos(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b, strict=True))

    assert cos(vecs[0], vecs[1]) > cos(vecs[0], vecs[2]) + 0.2


def test_long_text_is_truncated_and_says_so(client: httpx.Client) -> None:
    # About 420 tokens: over the model limit of 256, under the 2000-character limit.
    text = "the battery is fine but the screen is dim " * 60
    text = text[:1990]
    r = client.post("/predict", json={"text": text})
    assert r.status_code == 200 and r.json()["truncated"] is True
    r = client.post("/embed", json={"texts": [text, "short"]})
    assert r.json()["truncated"] == [True, False]


def test_health_probes(client: httpx.Client) -> None:
    assert client.get("/health").status_code == 200
    assert client.get("/health/live").status_code == 200
    ready = client.get("/health/ready")
    assert ready.status_code == 200 and ready.json()["models"] == ["embedding", "sentiment"]


def test_docs_and_openapi(client: httpx.Client) -> None:
    spec = client.get("/openapi.json").json()
    assert {"/predict", "/embed", "/health/ready"} <= set(spec["paths"])
    docs = client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


BAD = [
    ("/predict", b"{not json", 400, "not valid JSON"),
    ("/predict", b"", 400, "empty"),
    ("/predict", b"[1, 2]", 422, "JSON object"),
    ("/predict", b'{"text": 5}', 422, "'text' must be a string"),
    ("/predict", b'{"text": ""}', 422, "empty"),
    ("/predict", b'{"text": "   "}', 422, "empty"),
    ("/predict", b"{}", 422, "missing field"),
    ("/predict", b'{"txt": "hi"}', 422, "unknown field"),
    ("/predict", b'{"text": "a", "texts": ["b"]}', 422, "not both"),
    ("/predict", b'{"texts": []}', 422, "must not be empty"),
    ("/predict", b'{"texts": "abc"}', 422, "list of strings"),
    ("/predict", b'{"texts": ["ok", null]}', 422, "texts[1]"),
    ("/predict", b'{"text": "nul\\u0000byte"}', 422, "NUL"),
    ("/embed", b'{"texts": ["a","b","c","d","e","f","g","h","i"]}', 422, "limit is 8"),
    ("/embed", b'{"text": "a"}', 422, "unknown field"),
    ("/embed", b'{"texts": ["' + b"x" * 2001 + b'"]}', 422, "limit is 2000"),
    ("/predict", b"\xff\xfe garbage", 400, "not valid JSON"),
]


@pytest.mark.parametrize(("path", "body", "status", "message"), BAD)
def test_bad_input_gets_a_json_4xx(
    client: httpx.Client, path: str, body: bytes, status: int, message: str
) -> None:
    r = client.post(path, content=body, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    assert message in r.json()["error"]


def test_body_over_limit_is_413(client: httpx.Client) -> None:
    r = client.post("/predict", content=b'{"text": "' + b"a" * 70000 + b'"}')
    assert r.status_code == 413 and "65536" in r.json()["error"]

    def chunks() -> object:  # no content-length: the limit holds while streaming too
        yield b'{"text": "'
        for _ in range(20):
            yield b"a" * 4096
        yield b'"}'

    r = client.post("/predict", content=chunks())  # type: ignore[arg-type]
    assert r.status_code == 413


def test_unknown_route_and_method(client: httpx.Client) -> None:
    r = client.get("/nope")
    assert r.status_code == 404 and "error" in r.json()
    r = client.get("/predict")
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    r = client.head("/predict")
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    r = client.post("/health")
    assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD"
    for path in ("/v2/models/sentiment/ready%0A", "/v2/models/sentiment/infer%0A"):
        assert client.get(path).status_code == 404, path  # "$" matched before the newline


@pytest.mark.parametrize(
    "path", ["/health", "/health/ready", "/v2/health/live", "/v2", "/v1/models", "/metrics"]
)
def test_head_is_get_without_the_body(client: httpx.Client, path: str) -> None:
    """Load balancers and uptime checks probe with HEAD (RFC 9110: a server that has GET
    has HEAD)."""
    got, head = client.get(path), client.head(path)
    assert head.status_code == got.status_code == 200
    assert head.content == b""
    assert head.headers["content-type"] == got.headers["content-type"]
    if path != "/metrics":  # its counters move between the two requests
        assert head.headers["content-length"] == str(len(got.content))


@pytest.mark.parametrize("value", ["abc", "-1", "0", "nan", "inf"])
def test_bad_request_timeout_header(client: httpx.Client, value: str) -> None:
    r = client.post("/predict", json={"text": "fine"}, headers={"x-request-timeout": value})
    assert r.status_code == 400 and "timeout" in r.json()["error"]


def test_server_stays_healthy_after_bad_input(client: httpx.Client) -> None:
    for path, body, _, _ in BAD:
        client.post(path, content=body)
    assert client.get("/health/ready").status_code == 200
    assert client.post("/predict", json={"text": "still works"}).status_code == 200


def test_oversized_headers_are_431(client: httpx.Client) -> None:
    headers = {f"x-filler-{i}": "y" * 1000 for i in range(20)}
    r = client.post("/predict", json={"text": "fine"}, headers=headers)
    assert r.status_code == 431 and "16384" in r.json()["error"]
    assert client.post("/predict", json={"text": "fine"}).status_code == 200
