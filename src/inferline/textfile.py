"""Text files the commands read (``inferline submit``, ``inferline bench --data``): UTF-8,
a byte order mark skipped (Excel and Notepad write one), lines ending at ``\\n``.

Not ``str.splitlines()``: it also splits at U+2028, U+0085, ``\\x0b`` and others, which JSON
strings may hold unescaped, so valid JSONL was refused or split into extra lines."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from inferline.errors import InvalidInput


def read(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"{path}: not UTF-8 (at byte {exc.start})") from None


def lines(data: str) -> Iterator[tuple[int, str]]:
    """The lines that are not blank, numbered from 1, without a final ``\\r``."""
    for n, raw in enumerate(data.split("\n"), 1):
        line = raw.removesuffix("\r")
        if line.strip():
            yield n, line


def jsonl_text(path: Path, n: int, line: str) -> str:
    """The text of a JSONL line: a string, or an object with a string ``text``."""
    try:
        value: Any = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"{path}:{n}: not JSON: {exc}") from None
    text = value.get("text") if isinstance(value, dict) else value
    if not isinstance(text, str):
        raise InvalidInput(f"{path}:{n}: expected a string or an object with 'text'")
    return text
