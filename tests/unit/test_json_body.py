"""parse_json: the JSON of every request body, with repeated keys and runaway nesting refused."""

from __future__ import annotations

import pytest

from inferline.api.http import parse_json
from inferline.errors import InvalidInput


def nested_objects(depth: int) -> object:
    value: object = 1
    for _ in range(depth):
        value = {"a": value}
    return value


@pytest.mark.parametrize(
    ("body", "value"),
    [
        (b'{"text": "a", "texts": ["b"]}', {"text": "a", "texts": ["b"]}),
        (b'[{"a": 1}, {"a": 2}]', [{"a": 1}, {"a": 2}]),  # the same key in two objects
        (b'"just a string"', "just a string"),
        (b"[" * 3 + b"]" * 3, [[[]]]),
        (b'{"a": ' * 300 + b"1" + b"}" * 300, nested_objects(300)),  # deep, but not too deep
    ],
)
def test_valid_json(body: bytes, value: object) -> None:
    assert parse_json(body) == value
    assert parse_json(memoryview(body)) == value


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"text": "a", "text": "b"}', "'text' appears more than once"),
        (b'{"inputs": [{"name": "x", "shape": [1], "name": "y"}]}', "'name' appears"),
        (b'{"a\\u0062": 1, "ab": 2}', "'ab' appears"),  # the same key, spelled two ways
        (b"[" * 1010 + b"]" * 1010, "nested too deeply"),  # past the json module's depth
        (b"[" * 100_000, "not valid JSON"),  # past orjson's
        (b'{"text": "\xff"}', "not valid JSON"),
        (b'{"text": "\\ud800"}', "not valid JSON"),
        (b'{"n": NaN}', "not valid JSON"),
        (b'{"n": 1e999}', "not valid JSON"),
        (b"", "not valid JSON"),
    ],
)
def test_invalid_json_is_400(body: bytes, message: str) -> None:
    with pytest.raises(InvalidInput, match=message) as err:
        parse_json(body)
    assert err.value.status == 400
