"""The OpenAPI document, without a server: it covers every route, carries the settings' limits
and API keys, and its text pattern accepts exactly the texts that the server takes."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inferline.api import factory
from inferline.api.app import App, Route
from inferline.api.openapi import TEXT_PATTERN, document
from inferline.api.validation import check_text
from inferline.config import Settings
from inferline.errors import InvalidInput

SETTINGS = Settings(model_dir=Path("/nonexistent"), max_texts_per_request=8, max_text_chars=2000)


def served_routes(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> list[Route]:
    """The routes that create_app gives the App, whatever modules it takes them from."""
    routes: list[Route] = []

    def recording_app(service: Any, given: list[Route], *args: Any) -> App:
        routes.extend(given)
        return App(service, given, *args)

    monkeypatch.setattr(factory, "App", recording_app)
    factory.create_app(settings)
    return routes


def test_every_route_is_documented(monkeypatch: pytest.MonkeyPatch) -> None:
    # {name:path} (a parameter that may hold "/") is {name} in OpenAPI
    served = {
        (r.method.lower(), r.path.replace(":path}", "}"))
        for r in served_routes(monkeypatch, SETTINGS)
    }
    paths = document(SETTINGS)["paths"]
    assert served == {(method, path) for path, item in paths.items() for method in item}


def test_every_operation_documents_its_errors() -> None:
    for path, item in document(SETTINGS)["paths"].items():
        for method, operation in item.items():
            responses = operation["responses"]
            assert {"200", "202"} & set(responses) and "431" in responses, (method, path)
            for code, response in responses.items():
                assert response["description"], (method, path, code)
            if method == "post":
                body = responses["400"]["content"]["application/json"]["schema"]["$ref"]
                openai = path in ("/v1/embeddings", "/v1/chat/completions", "/v1/completions")
                assert body.endswith("/OpenAIError" if openai else "/Error"), path
                assert {"413", "429", "503"} <= set(responses), path


def test_limits_come_from_the_settings() -> None:
    schemas = document(SETTINGS)["components"]["schemas"]
    assert schemas["Text"]["maxLength"] == 2000
    assert schemas["Texts"]["maxItems"] == 8
    shape = schemas["InferRequest"]["properties"]["inputs"]["items"]["properties"]["shape"]
    assert shape["prefixItems"][0]["maximum"] == 8
    bigger = document(SETTINGS.model_copy(update={"max_text_chars": 50}))
    assert bigger["components"]["schemas"]["Text"]["maxLength"] == 50


def test_api_keys_are_documented_where_they_are_asked_for() -> None:
    plain = document(SETTINGS)
    assert "securitySchemes" not in plain["components"]
    assert "401" not in plain["paths"]["/predict"]["post"]["responses"]
    keyed = document(SETTINGS.model_copy(update={"api_keys": "k1", "max_concurrent_per_key": 2}))
    assert set(keyed["components"]["securitySchemes"]) == {"bearer", "apiKey"}
    for path, method in (("/predict", "post"), ("/v2", "get"), ("/v1/models", "get")):
        operation = keyed["paths"][path][method]
        assert operation["security"] and {"401", "429"} <= set(operation["responses"])
        assert "WWW-Authenticate" in operation["responses"]["401"]["headers"]
    for path in ("/health/ready", "/v2/health/live", "/metrics", "/docs", "/openapi.json"):
        operation = keyed["paths"][path]["get"]
        assert "security" not in operation and "401" not in operation["responses"], path


def accepted(text: str) -> bool:
    try:
        check_text(text, SETTINGS)
    except InvalidInput:
        return False
    return True


@settings(max_examples=300, derandomize=True, database=None)
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=12))
def test_the_text_pattern_is_the_servers_rule(text: str) -> None:
    assert (re.search(TEXT_PATTERN, text) is not None) == accepted(text)


@pytest.mark.parametrize(
    "text", ["a", " a ", "\u3000x", "\x00", "a\x00", " ", "\u2028\u3000\x1c", "\ufeff", "\n"]
)
def test_the_text_pattern_on_edge_cases(text: str) -> None:
    assert (re.search(TEXT_PATTERN, text) is not None) == accepted(text)
