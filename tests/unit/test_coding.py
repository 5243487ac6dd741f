"""inflate: gzip and deflate request bodies, within the body limit."""

from __future__ import annotations

import gzip
import zlib

import pytest

from inferline.api.coding import inflate
from inferline.errors import InvalidInput, PayloadTooLarge

BODY = b'{"texts": ["' + b"compressible review text, " * 40 + b'"]}'
LIMIT = 4096


def raw_deflate(data: bytes) -> bytes:
    packer = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return packer.compress(data) + packer.flush()


@pytest.mark.parametrize(
    ("coding", "packed"),
    [
        (b"gzip", gzip.compress(BODY)),
        (b"x-gzip", gzip.compress(BODY)),
        (b"GZIP", gzip.compress(BODY)),
        (b"deflate", zlib.compress(BODY)),  # the zlib wrapper, as tritonclient sends it
        (b"deflate", raw_deflate(BODY)),  # no wrapper, as some clients send it
        (b"identity", BODY),
        (b"", BODY),
        (b"gzip, identity", gzip.compress(BODY)),
        (b"gzip", gzip.compress(BODY[:100]) + gzip.compress(BODY[100:])),  # two members
    ],
)
def test_bodies_inflate(coding: bytes, packed: bytes) -> None:
    assert inflate(packed, coding, LIMIT) == BODY


def test_the_limit_holds_on_the_inflated_size() -> None:
    bomb = gzip.compress(b"0" * 10_000_000)  # about 10 KB on the wire
    with pytest.raises(PayloadTooLarge, match="inflates to over the limit of 4096"):
        inflate(bomb, b"gzip", LIMIT)
    members = gzip.compress(b"0" * 3000) * 2  # each member is under the limit, not both
    with pytest.raises(PayloadTooLarge):
        inflate(members, b"gzip", LIMIT)
    assert inflate(gzip.compress(b"0" * LIMIT), b"gzip", LIMIT) == b"0" * LIMIT


@pytest.mark.parametrize("coding", [b"br", b"zstd", b"compress", b"gzip, deflate"])
def test_other_codings_are_415(coding: bytes) -> None:
    with pytest.raises(InvalidInput) as err:
        inflate(b"x", coding, LIMIT)
    assert err.value.status == 415 and "gzip, deflate or identity" in str(err.value)


@pytest.mark.parametrize(
    ("coding", "packed"),
    [
        (b"gzip", BODY),  # not compressed at all
        (b"gzip", gzip.compress(BODY)[:-12]),  # cut short
        (b"gzip", gzip.compress(BODY) + b"junk"),  # garbage after the member
        (b"deflate", b"\x00\x01\x02 not deflate"),
        (b"deflate", zlib.compress(BODY) + b"more"),
    ],
    ids=["plain", "truncated", "trailing-junk", "not-deflate", "deflate-trailing"],
)
def test_bodies_not_in_their_coding_are_400(coding: bytes, packed: bytes) -> None:
    with pytest.raises(InvalidInput) as err:
        inflate(packed, coding, LIMIT)
    assert err.value.status == 400 and "not valid" in str(err.value)
