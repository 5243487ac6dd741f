"""Checks on request bodies shared by every protocol; each failure names the limit."""

from __future__ import annotations

import math
import re
import time
from typing import Any

from inferline.api.http import Request
from inferline.config import Settings
from inferline.errors import InvalidInput

DECIMAL = re.compile(r"\s*[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?\s*")


def check_texts(texts: Any, settings: Settings, field: str = "texts") -> list[str]:
    if not isinstance(texts, list):
        raise InvalidInput(f"'{field}' must be a list of strings")
    if not texts:
        raise InvalidInput(f"'{field}' must not be empty")
    if len(texts) > settings.max_texts_per_request:
        raise InvalidInput(
            f"'{field}' has {len(texts)} texts; "
            f"the limit is {settings.max_texts_per_request} per request"
        )
    for i, text in enumerate(texts):
        check_text(text, settings, f"{field}[{i}]")
    return texts


def check_text(text: Any, settings: Settings, field: str = "text") -> str:
    if not isinstance(text, str):
        raise InvalidInput(f"'{field}' must be a string")
    if not text.strip():
        raise InvalidInput(f"'{field}' is empty")
    if len(text) > settings.max_text_chars:
        raise InvalidInput(
            f"'{field}' has {len(text)} characters; the limit is {settings.max_text_chars}"
        )
    if "\x00" in text:
        raise InvalidInput(f"'{field}' contains a NUL character")
    return text


def check_object(body: Any, allowed: set[str]) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise InvalidInput("the body must be a JSON object")
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise InvalidInput(
            f"unknown field(s): {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}"
        )
    return body


def deadline_of(request: Request, settings: Settings, timeout: Any = None) -> float:
    """A monotonic deadline from ``X-Request-Timeout`` (seconds), a protocol value, or the
    server default."""
    seconds = requested_timeout(request, settings, timeout)
    return time.monotonic() + (settings.request_timeout_s if seconds is None else seconds)


def requested_timeout(request: Request, settings: Settings, timeout: Any = None) -> float | None:
    """The seconds that ``X-Request-Timeout`` or a protocol value asks for, capped at 10
    times the server default; None when the request asks for none."""
    raw: Any = timeout
    header = request.header(b"x-request-timeout")
    if header is not None:
        raw = header.decode("latin-1")
    if raw is None:
        return None
    if isinstance(raw, str) and not DECIMAL.fullmatch(raw):  # float() would take "1_0", "nan"
        raise InvalidInput("the request timeout must be a number of seconds", status=400)
    try:
        seconds = float(raw)
    except (TypeError, ValueError):
        raise InvalidInput("the request timeout must be a number of seconds", status=400) from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise InvalidInput(
            "the request timeout must be a finite, positive number of seconds", status=400
        )
    return min(seconds, settings.request_timeout_s * 10)
