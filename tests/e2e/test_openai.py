"""The OpenAI Python SDK, unmodified, against a real server's ``/v1``."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import openai
import pytest
from tokenizers import Tokenizer

from tests.conftest import Server, model_dir
from tests.integration.saturation import QUEUE, saturated

MODEL = "all-MiniLM-L6-v2"
TEXTS = [
    "The battery lasts all day and the screen is gorgeous.",
    "Broke after a week.",
    "Ça marche très bien, merci ! 日本語も大丈夫",
]


def sdk(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="not-checked", max_retries=0)


@pytest.fixture
def oai(server: Server) -> Iterator[openai.OpenAI]:
    with sdk(server) as client:
        yield client


def embed(client: httpx.Client, texts: list[str]) -> np.ndarray[Any, np.dtype[np.float32]]:
    r = client.post("/embed", json={"texts": texts})
    assert r.status_code == 200
    return np.array(r.json()["embeddings"], dtype=np.float32)


def token_count(texts: list[str]) -> int:
    tokenizer = Tokenizer.from_file(str(model_dir() / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return sum(len(tokenizer.encode(t).ids) for t in texts)


def test_one_string(oai: openai.OpenAI, client: httpx.Client) -> None:
    # No encoding_format: the SDK asks for base64 and decodes it itself.
    response = oai.embeddings.create(model=MODEL, input=TEXTS[0])
    assert response.object == "list" and response.model == MODEL
    (item,) = response.data
    assert item.object == "embedding" and item.index == 0
    vector = np.array(item.embedding, dtype=np.float32)
    assert vector.shape == (384,)
    np.testing.assert_array_equal(vector, embed(client, TEXTS[:1])[0])
    assert response.usage.prompt_tokens == token_count(TEXTS[:1])
    assert response.usage.total_tokens == response.usage.prompt_tokens


def test_list_of_strings_as_floats(oai: openai.OpenAI, client: httpx.Client) -> None:
    response = oai.embeddings.create(model=MODEL, input=TEXTS, encoding_format="float")
    assert [d.index for d in response.data] == [0, 1, 2]
    vectors = np.array([d.embedding for d in response.data], dtype=np.float32)
    np.testing.assert_array_equal(vectors, embed(client, TEXTS))
    assert response.usage.prompt_tokens == token_count(TEXTS)
    assert response.usage.total_tokens == token_count(TEXTS)


def test_base64(oai: openai.OpenAI, client: httpx.Client) -> None:
    response = oai.embeddings.create(
        model=MODEL, input=TEXTS, encoding_format="base64", dimensions=384
    )
    encoded = [d.embedding for d in response.data]
    assert all(isinstance(e, str) for e in encoded)  # the SDK leaves an explicit base64 as is
    vectors = np.array(
        [np.frombuffer(base64.b64decode(e), dtype="<f4") for e in encoded]  # type: ignore[arg-type]
    )
    np.testing.assert_array_equal(vectors, embed(client, TEXTS))


def test_models(oai: openai.OpenAI) -> None:
    models = list(oai.models.list())
    assert [m.id for m in models] == [MODEL]
    assert models[0].object == "model" and models[0].owned_by == "inferline"
    assert oai.models.retrieve(MODEL).id == MODEL
    with pytest.raises(openai.NotFoundError):
        oai.models.retrieve("gpt-4")


def error_of(exc: openai.APIStatusError) -> dict[str, Any]:
    body = exc.response.json()
    assert set(body) == {"error"}
    error: dict[str, Any] = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


@pytest.mark.parametrize(
    ("kwargs", "param", "message"),
    [
        ({"input": [[101, 7592, 102]]}, "input", "token arrays are not supported"),
        ({"input": [101, 7592, 102]}, "input", "token arrays are not supported"),
        ({"input": ""}, "input", "empty"),
        ({"input": []}, "input", "must not be empty"),
        ({"input": ["a"] * 9}, "input", "limit is 8"),
        ({"input": "ok", "dimensions": 128}, "dimensions", "must be 384"),
    ],
)
def test_invalid_request_is_400(
    oai: openai.OpenAI, kwargs: dict[str, Any], param: str, message: str
) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        oai.embeddings.create(model=MODEL, **kwargs)
    error = error_of(err.value)
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert message in error["message"]


def test_unknown_model_is_404(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as err:
        oai.embeddings.create(model="text-embedding-3-small", input="ok")
    error = error_of(err.value)
    assert error["code"] == "model_not_found" and error["param"] == "model"


def test_deadline_is_504(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.InternalServerError) as err:
        oai.embeddings.create(
            model=MODEL, input="ok", extra_headers={"X-Request-Timeout": "0.000001"}
        )
    assert err.value.status_code == 504
    assert error_of(err.value)["code"] == "timeout"


def test_full_queue_is_429(busy_server: Server) -> None:
    with sdk(busy_server) as oai:
        with saturated(busy_server, "embedding"), pytest.raises(openai.RateLimitError) as err:
            oai.embeddings.create(model=MODEL, input=["text"])
        assert err.value.response.headers["retry-after"]
        assert error_of(err.value)["type"] == "rate_limit_error"
        # More than the whole queue holds: never admitted, so not told to retry.
        with pytest.raises(openai.BadRequestError, match="holds at most"):
            oai.embeddings.create(model=MODEL, input=["text"] * (QUEUE + 1))


def test_not_ready_is_503(failed_server: Server) -> None:
    with sdk(failed_server) as oai, pytest.raises(openai.InternalServerError) as err:
        oai.embeddings.create(model=MODEL, input="ok")
    assert err.value.status_code == 503
    assert error_of(err.value)["code"] == "service_unavailable"
