"""BodyDecoder: a request body from its Content-Length or chunked framing, fed in any pieces."""

from __future__ import annotations

import pytest

from inferline.api.framing import HUGE, MAX_LINE, BodyDecoder, FramingError, byte_count

BODY = b'{"text": "a body that arrives after an Upgrade offer"}'
CHUNKED = b"5\r\n" + BODY[:5] + b"\r\n" + b"%x;name=value\r\n" % (len(BODY) - 5) + BODY[5:]
CHUNKED += b"\r\n0\r\nX-Trailer: yes\r\n\r\n"
NEXT = b"GET /health HTTP/1.1\r\n\r\n"


def decoder(*headers: tuple[bytes, bytes]) -> BodyDecoder:
    return BodyDecoder.for_headers(list(headers))


def feed_in_pieces(dec: BodyDecoder, data: bytes, size: int) -> tuple[bytes, bool, bytes]:
    body, rest, done = b"", b"", False
    for at in range(0, len(data), size):
        pieces, done, left = dec.feed(data[at : at + size])
        body += b"".join(pieces)
        if done:
            rest = left + data[at + size :]
            break
    return body, done, rest


@pytest.mark.parametrize("size", [1, 2, 7, 1000])
def test_a_content_length_body_in_any_pieces(size: int) -> None:
    dec = decoder((b"content-length", b"%d" % len(BODY)))
    assert feed_in_pieces(dec, BODY + NEXT, size) == (BODY, True, NEXT)


@pytest.mark.parametrize("size", [1, 2, 3, 7, 1000])
def test_a_chunked_body_in_any_pieces(size: int) -> None:
    dec = decoder((b"transfer-encoding", b"chunked"))
    assert feed_in_pieces(dec, CHUNKED + NEXT, size) == (BODY, True, NEXT)


def test_no_framing_headers_mean_an_empty_body() -> None:
    dec = decoder((b"host", b"x"))
    assert dec.done
    assert dec.feed(NEXT) == ([], True, NEXT)


def test_a_zero_length_body_is_done_at_once() -> None:
    assert decoder((b"content-length", b"0")).done


def test_an_unfinished_body_is_not_done() -> None:
    dec = decoder((b"content-length", b"10"))
    assert dec.feed(b"12345") == ([b"12345"], False, b"")
    dec = decoder((b"transfer-encoding", b"chunked"))
    assert dec.feed(b"5\r\nabc") == ([b"abc"], False, b"")


@pytest.mark.parametrize(
    "headers",
    [
        [(b"content-length", b"-1")],
        [(b"content-length", b"1e3")],
        [(b"content-length", b"3"), (b"content-length", b"4")],
        [(b"transfer-encoding", b"gzip")],
        [(b"transfer-encoding", b"chunked, gzip")],
    ],
    ids=["negative", "not-digits", "two-lengths", "not-chunked", "chunked-not-last"],
)
def test_framing_headers_that_cannot_be_followed(headers: list[tuple[bytes, bytes]]) -> None:
    with pytest.raises(FramingError):
        BodyDecoder.for_headers(headers)


@pytest.mark.parametrize(
    "data",
    [
        b"zz\r\nabc\r\n0\r\n\r\n",  # not hexadecimal
        b"\r\n",  # no size at all
        b"3\r\nabcdef\r\n0\r\n\r\n",  # more data than the chunk's size
        b"1" * (MAX_LINE + 1),  # a size line without end
        b"0\r\n" + b"x-t: 1\r\n" * 65 + b"\r\n",  # a trailer flood
    ],
    ids=["not-hex", "empty-size", "overlong-chunk", "endless-line", "trailer-flood"],
)
def test_malformed_chunks_are_refused(data: bytes) -> None:
    dec = decoder((b"transfer-encoding", b"chunked"))
    with pytest.raises(FramingError):
        dec.feed(data)


@pytest.mark.parametrize(
    ("value", "count"),
    [
        (b"0", 0),
        (b"42", 42),
        (b"0" * 5000 + b"42", 42),  # int() refuses strings over 4,300 digits
        (b"9" * 5000, HUGE),
        (b"1" + b"0" * 18, HUGE),
        (b"", None),
        (b"-1", None),
        (b"+1", None),
        (b" 1", None),
        (b"1e3", None),
        ("٣".encode(), None),  # a digit, but not an ASCII one
    ],
)
def test_byte_count(value: bytes, count: int | None) -> None:
    assert byte_count(value) == count


def test_a_content_length_of_5000_digits() -> None:
    padded = decoder((b"content-length", b"0" * 5000 + b"%d" % len(BODY)))
    assert feed_in_pieces(padded, BODY + NEXT, 1000) == (BODY, True, NEXT)
    assert decoder((b"content-length", b"9" * 5000)).remaining == HUGE
