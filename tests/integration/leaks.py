"""What an error body or gRPC status must never show: a stack trace or a path on the server."""

from __future__ import annotations

import re

from tests.conftest import model_dir

LEAK = re.compile(
    r"Traceback|File \"|\w\.pyx?\b|site-packages|<class '"
    r"|(?:^|[\s'\"(=:])/(?:home|root|tmp|usr|opt|var|srv|work|app)/"
)


def assert_no_leak(text: str) -> None:
    found = LEAK.search(text)
    assert found is None, f"{found.group(0)!r} in {text[:500]!r}"
    assert str(model_dir()) not in text, text[:500]
