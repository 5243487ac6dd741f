"""The body of one HTTP/1.1 request, decoded from its framing (Content-Length or chunked).

httptools stops parsing at the end of the headers of a request that offers an Upgrade
(`Upgrade: h2c` from `curl --http2`, Java's HttpClient and RestClient, Ktor), and uvicorn,
which declines the offer, never sees the body: the app gets an empty one (uvicorn#2722).
RFC 9110 §7.8 lets a server ignore the offer and serve the request as sent, so api/wire.py
reads such a body with this decoder, then hands the connection back to a fresh parser.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MAX_LINE = 4096  # a chunk-size line or a trailer line longer than this is refused
MAX_TRAILERS = 64
HUGE = 10**18  # a count with more significant digits than this one reads as this


def byte_count(value: bytes) -> int | None:
    """The decimal byte count ``value`` (a Content-Length, say), or None when it is not one.

    Leading zeros are valid, and ``int`` refuses strings over 4,300 digits (a ValueError,
    so a 500): zeros are dropped, and a count too large for any limit reads as HUGE."""
    if not value.isdigit():
        return None
    digits = value.lstrip(b"0")
    return HUGE if len(digits) > 18 else int(digits or b"0")


class FramingError(ValueError):
    """The body does not follow its declared framing."""


@dataclass(slots=True)
class BodyDecoder:
    """Feed bytes as they come; each call returns (body pieces, done, bytes past the body)."""

    remaining: int = 0  # of the current chunk, or of a Content-Length body
    chunked: bool = False
    _state: str = "data"  # chunked: size, data, data-end, trailers
    _line: bytearray = field(default_factory=bytearray)
    _trailers: int = 0

    @classmethod
    def for_headers(cls, headers: list[tuple[bytes, bytes]]) -> BodyDecoder:
        """From the request's headers (names in lower case, as uvicorn keeps them)."""
        coding = b",".join(v for k, v in headers if k == b"transfer-encoding").lower()
        if coding:
            if coding.replace(b" ", b"").split(b",")[-1] != b"chunked":
                raise FramingError("a Transfer-Encoding that does not end in chunked")
            return cls(chunked=True, _state="size")
        lengths = {v.strip() for k, v in headers if k == b"content-length"}
        if not lengths:
            return cls()
        length = byte_count(lengths.pop()) if len(lengths) == 1 else None
        if length is None:
            raise FramingError("a Content-Length that is not one byte count")
        return cls(remaining=length)

    @property
    def done(self) -> bool:
        return self._state == "done" or (not self.chunked and self.remaining == 0)

    def feed(self, data: bytes) -> tuple[list[bytes], bool, bytes]:
        pieces: list[bytes] = []
        at = 0
        while at < len(data) and not self.done:
            if self._state == "data":
                take = data[at : at + self.remaining]
                pieces.append(take)
                self.remaining -= len(take)
                at += len(take)
                if self.chunked and self.remaining == 0:
                    self._state = "data-end"
                continue
            line, at = self._read_line(data, at)
            if line is not None:
                self._on_line(line)
        return pieces, self.done, data[at:]

    def _read_line(self, data: bytes, at: int) -> tuple[bytes | None, int]:
        end = data.find(b"\n", at)
        self._line += data[at : len(data) if end < 0 else end + 1]
        if len(self._line) > MAX_LINE:
            raise FramingError("a chunk-size or trailer line is too long")
        if end < 0:
            return None, len(data)
        line = bytes(self._line).rstrip(b"\r\n")
        self._line.clear()
        return line, end + 1

    def _on_line(self, line: bytes) -> None:
        if self._state == "data-end":
            if line:
                raise FramingError("a chunk is longer than its size")
            self._state = "size"
        elif self._state == "size":
            size = line.split(b";", 1)[0].strip()
            if not size or not all(c in b"0123456789abcdefABCDEF" for c in size):
                raise FramingError("a chunk size that is not a hexadecimal number")
            self.remaining = int(size, 16)
            self._state = "data" if self.remaining else "trailers"
        elif not line:  # the blank line after the trailers ends the body
            self._state = "done"
        else:
            self._trailers += 1
            if self._trailers > MAX_TRAILERS:
                raise FramingError("too many trailer fields")
