"""API keys: constant-time checks and a per-key limit on requests in flight.

Shared by the HTTP app and the gRPC server. Keys never reach a log line: errors name no key.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from inferline.config import Settings
from inferline.errors import InvalidKey, Overloaded, Unauthorized

log = logging.getLogger(__name__)

CREDENTIALS = {"authorization": "Authorization", "x-api-key": "X-API-Key"}
MODEL_READY = re.compile(r"/v2/models/[^/]+(?:/versions/[^/]+)?/ready")


class KeyFile:
    """A file of keys, one a line (a mounted Secret), re-read when it changes: Kubernetes
    swaps a Secret's files in place, so rotating a key needs no restart."""

    def __init__(self, path: Path, every_s: float, clock: Callable[[], float]) -> None:
        self.path = path
        self.every_s = every_s
        self.clock = clock
        self._checked = clock()
        self._stamp = self._stat()

    def read(self) -> list[str]:
        text = self.path.read_text(encoding="utf-8-sig")  # editors on Windows add a BOM
        return [line.strip() for line in text.splitlines() if line.strip()]

    def changed(self) -> list[str] | None:
        """The file's keys if it changed since the last look (at most every ``every_s``)."""
        now = self.clock()
        if now - self._checked < self.every_s:
            return None
        self._checked = now
        stamp = self._stat()
        if stamp == self._stamp:
            return None
        self._stamp = stamp
        return self.read()

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return st.st_mtime_ns, st.st_ino, st.st_size


class ApiKeys:
    def __init__(
        self,
        keys: list[str],
        open_paths: list[str],
        max_concurrent: int = 0,
        *,
        listed: list[str] | None = None,
        file: KeyFile | None = None,
    ) -> None:
        self._keys = [k.encode() for k in keys]
        self.open_paths = tuple(open_paths)
        self.max_concurrent = max_concurrent
        self._inflight: Counter[int] = Counter()
        self._listed = listed or []  # the keys from the setting, kept across reloads
        # Watched even when empty at start: filling the shipped empty Secret turns keys on.
        self._file = file

    @classmethod
    def from_settings(
        cls, settings: Settings, clock: Callable[[], float] = time.monotonic
    ) -> ApiKeys:
        listed = [k.strip() for k in settings.api_keys.split(",") if k.strip()]
        keys = list(listed)
        file = None
        if settings.api_keys_file is not None:
            file = KeyFile(settings.api_keys_file, settings.api_keys_reload_s, clock)
            try:
                keys += file.read()
            except (OSError, UnicodeDecodeError) as exc:  # named: a bare errno says nothing
                why = exc.strerror if isinstance(exc, OSError) else "not UTF-8"
                raise ValueError(f"api_keys_file: cannot read {file.path}: {why}") from None
        open_paths = [p.strip() for p in settings.auth_open_paths.split(",") if p.strip()]
        return cls(keys, open_paths, settings.max_concurrent_per_key, listed=listed, file=file)

    def _reload(self) -> None:
        assert self._file is not None
        try:
            found = self._file.changed()
        except (OSError, UnicodeDecodeError) as exc:
            log.warning("could not re-read the API keys file; keeping the keys: %s", exc)
            return
        if found is None:
            return
        if not found:  # a mistake, or a half-written file: it must not open the API
            log.warning("the API keys file is empty; keeping the previous keys")
            return
        keys = [k.encode() for k in [*self._listed, *found]]
        if not self._keys:
            log.warning("API keys appeared in %s: authentication is now on", self._file.path)
        self._keys = keys
        log.info("API keys reloaded from %s: %d key(s)", self._file.path, len(keys))

    @property
    def enabled(self) -> bool:
        if self._file is not None:
            self._reload()
        return bool(self._keys)

    def is_open(self, path: str) -> bool:
        if path.endswith("/ready") and MODEL_READY.fullmatch(path):
            # OIP files a model's readiness under health, as gRPC's ModelReady is here.
            path = "/v2/health/ready"
        return path.startswith(self.open_paths)

    def identify(self, headers: Iterable[tuple[str, str]]) -> int:
        """Return an id of the key presented in ``headers`` (lower-case names, as each
        protocol gives them), for :meth:`slot`, or raise Unauthorized.

        ``X-API-Key`` is read before ``Authorization: Bearer``, so a proxy's own
        Authorization can pass through. Either one repeated with different values is
        refused: a proxy in front and this service could each read a different one."""
        if self._file is not None:
            self._reload()
        found: dict[str, str] = {}
        for name, value in headers:
            if name in CREDENTIALS and found.setdefault(name, value) != value:
                raise Unauthorized(f"the {CREDENTIALS[name]} header is sent more than once")
        presented = found.get("x-api-key", "").strip()  # an empty one is not a key
        authorization = found.get("authorization")
        if not presented and authorization is not None:
            scheme, _, value = authorization.partition(" ")
            if scheme.lower() == "bearer":
                presented = value.strip()
        if not presented:
            raise Unauthorized("an API key is required: send Authorization: Bearer <key>")
        candidate = presented.encode()
        matched = False
        for key in self._keys:  # compare with every key: timing says nothing
            matched |= hmac.compare_digest(candidate, key)
        if not matched:
            raise InvalidKey("the API key is not valid")
        return hash(candidate)  # the same across reloads, unlike a position in the list

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
