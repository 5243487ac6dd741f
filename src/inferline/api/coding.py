"""Compressed request bodies: ``Content-Encoding: gzip`` or ``deflate``, as tritonclient sends
with ``request_compression_algorithm``, inflated within the body limit (no zip bombs)."""

from __future__ import annotations

import zlib

from inferline.errors import InvalidInput, PayloadTooLarge

GZIP = 16 + zlib.MAX_WBITS
WBITS = {b"gzip": GZIP, b"x-gzip": GZIP, b"deflate": zlib.MAX_WBITS}
SUPPORTED = "gzip, deflate or identity"


def inflate(body: bytes, coding: bytes, limit: int) -> bytes:
    """``body`` decoded from its Content-Encoding header value ``coding``.

    415 for a coding other than gzip or deflate, 413 when the decoded body is over ``limit``
    bytes, 400 when the body is not in its coding."""
    listed = coding.lower().replace(b" ", b"").split(b",")
    codings = [c for c in listed if c not in (b"", b"identity")]
    if not codings:
        return body
    name = codings[0].decode("latin-1")
    if len(codings) > 1 or codings[0] not in WBITS:
        raise InvalidInput(
            f"Content-Encoding {coding.decode('latin-1')!r} is not supported; send {SUPPORTED}",
            status=415,
        )
    try:
        return _inflate(body, WBITS[codings[0]], limit)
    except zlib.error:
        if codings[0] == b"deflate":
            try:  # "deflate" without the zlib wrapper, as some clients send it
                return _inflate(body, -zlib.MAX_WBITS, limit)
            except zlib.error:
                pass
        raise InvalidInput(f"the body is not valid {name} data", status=400) from None


def _inflate(body: bytes, wbits: int, limit: int) -> bytes:
    out = bytearray()
    data = body
    while True:
        stream = zlib.decompressobj(wbits)
        out += stream.decompress(data, limit + 1 - len(out))
        if len(out) > limit:
            raise PayloadTooLarge(f"the body inflates to over the limit of {limit} bytes")
        if not stream.eof:
            raise zlib.error("the compressed body ends early")
        data = stream.unused_data
        if not data:
            return bytes(out)
        if wbits != GZIP:  # only gzip allows members one after another
            raise zlib.error("data after the end of the compressed body")
