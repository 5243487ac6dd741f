"""API keys: constant-time checks and a per-key limit on requests in flight.

Shared by the HTTP app and the gRPC server. Keys never reach a log line: errors name no key.
"""

from __future__ import annotations

import contextlib
import hmac
from collections import Counter
from collections.abc import Iterator

from inferline.config import Settings
from inferline.errors import Overloaded, Unauthorized


class ApiKeys:
    def __init__(self, keys: list[str], open_paths: list[str], max_concurrent: int = 0) -> None:
        self._keys = [k.encode() for k in keys]
        self.open_paths = tuple(open_paths)
        self.max_concurrent = max_concurrent
        self._inflight: Counter[int] = Counter()

    @classmethod
    def from_settings(cls, settings: Settings) -> ApiKeys:
        keys = [k.strip() for k in settings.api_keys.split(",") if k.strip()]
        if settings.api_keys_file is not None:
            text = settings.api_keys_file.read_text(encoding="utf-8")
            keys += [line.strip() for line in text.splitlines() if line.strip()]
        open_paths = [p.strip() for p in settings.auth_open_paths.split(",") if p.strip()]
        return cls(keys, open_paths, settings.max_concurrent_per_key)

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def is_open(self, path: str) -> bool:
        return path.startswith(self.open_paths)

    def identify(self, authorization: str | None, api_key: str | None) -> int:
        """Return the index of the presented key, or raise Unauthorized."""
        presented = api_key
        if presented is None and authorization is not None:
            scheme, _, value = authorization.partition(" ")
            if scheme.lower() == "bearer":
                presented = value.strip()
        if not presented:
            raise Unauthorized("an API key is required: send Authorization: Bearer <key>")
        candidate = presented.encode()
        found = -1
        for i, key in enumerate(self._keys):  # compare with every key: timing says nothing
            if hmac.compare_digest(candidate, key):
                found = i
        if found < 0:
            raise Unauthorized("the API key is not valid")
        return found

    @contextlib.contextmanager
    def slot(self, key: int) -> Iterator[None]:
        """Hold one of the key's concurrent-request slots for the duration."""
        if self.max_concurrent and self._inflight[key] >= self.max_concurrent:
            raise Overloaded(
                f"this API key already has {self.max_concurrent} requests in flight",
                retry_after=1.0,
                reason="key_limit",
            )
        self._inflight[key] += 1
        try:
            yield
        finally:
            self._inflight[key] -= 1
