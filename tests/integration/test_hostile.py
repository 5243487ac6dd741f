"""Hostile input over HTTP (the REST API, OIP REST and the OpenAI routes), against a real server
with small limits (8 texts, 2000 characters, 64 KiB bodies, 16 KiB of headers).

Each case gets its documented 4xx; no body shows a stack trace or a path on the server; and
after the whole corpus the server is still ready and serving, with no traceback in its log.
Raw sockets send what httpx would not: malformed HTTP, truncated bodies, header floods.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import re
import select
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.conftest import Server, ServerFactory
from tests.integration.leaks import assert_no_leak

LIMIT = 65536  # the test server's INFERLINE_MAX_BODY_BYTES
MB = 1_000_000
JSON = {"content-type": "application/json"}
FORM = {"content-type": "application/x-www-form-urlencoded"}
GZIP = {"content-type": "application/json", "content-encoding": "gzip"}


@pytest.fixture(scope="module", autouse=True)
def log_start(server: Server) -> int:
    """Where the server's log stood before this module's requests."""
    return len(server.output())


@dataclass(frozen=True)
class Case:
    path: str
    body: bytes
    status: int
    message: str  # in the error message
    headers: dict[str, str] = field(default_factory=lambda: JSON)


def dumps(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def tensor(texts: object, shape: object = None, **more: object) -> dict[str, object]:
    count = len(texts) if isinstance(texts, list) and shape is None else shape
    return {"name": "text", "datatype": "BYTES", "shape": [count], "data": texts, **more}


def oip(body: dict[str, object] | None = None, **tensor_fields: object) -> bytes:
    request = body if body is not None else {"inputs": [tensor(["fine"]) | tensor_fields]}
    return dumps(request)


def nested(depth: int, closed: bool = True) -> bytes:
    return b"[" * depth + (b"]" * depth if closed else b"")


PREDICT = "/predict"
EMBED = "/embed"
INFER = "/v2/models/sentiment/infer"
OPENAI = "/v1/embeddings"
BINARY = {"binary_data_size": -1}
OPENAI_OK = b'"model": "all-MiniLM-L6-v2", '

CASES: dict[str, Case] = {
    # invalid UTF-8, in the body and inside JSON strings
    "utf8-body": Case(PREDICT, b'\xff\xfe{"text": "x"}', 400, "not valid JSON"),
    "utf8-string": Case(PREDICT, b'{"text": "caf\xe9 au lait"}', 400, "not valid JSON"),
    "utf8-overlong": Case(EMBED, b'{"texts": ["\xc0\xaf"]}', 400, "not valid JSON"),
    "utf8-surrogate-bytes": Case(PREDICT, b'{"text": "\xed\xa0\x80"}', 400, "not valid JSON"),
    "utf8-surrogate-escape": Case(PREDICT, b'{"text": "\\ud800 alone"}', 400, "not valid JSON"),
    "utf8-oip": Case(INFER, b'{"inputs": [{"data": ["\xc3\x28"]}]}', 400, "not valid JSON"),
    "utf8-openai": Case(OPENAI, b"{" + OPENAI_OK + b'"input": "\xff"}', 400, "not valid JSON"),
    # NUL bytes: escaped (a string with NUL) and raw (not JSON at all)
    "nul-escaped": Case(PREDICT, b'{"text": "a\\u0000b"}', 422, "NUL"),
    "nul-escaped-oip": Case(INFER, oip(data=["a\x00b"]), 400, "NUL"),
    "nul-escaped-openai": Case(OPENAI, b"{" + OPENAI_OK + b'"input": "\\u0000"}', 400, "NUL"),
    "nul-raw": Case(PREDICT, b'{"text": "a\x00b"}', 400, "not valid JSON"),
    "nul-after-json": Case(EMBED, b'{"texts": ["a"]}\x00', 400, "not valid JSON"),
    # texts that tokenise to nothing: they got the empty string's answer
    "zero-width": Case(PREDICT, dumps({"text": "\u200b\ufeff"}), 422, "nothing the model"),
    "combining-only": Case(EMBED, dumps({"texts": ["fine", "\u0301" * 50]}), 422, "text 1 "),
    "control-oip": Case(INFER, oip(data=["\x01\x02"]), 400, "nothing the model reads"),
    "soft-hyphen-openai": Case(
        OPENAI, b"{" + OPENAI_OK + b'"input": "\\u00ad"}', 400, "nothing the model reads"
    ),
    # 1 MB strings are over the body limit; long strings under it are over the text limit
    "1mb-text": Case(PREDICT, b'{"text": "' + b"a" * MB + b'"}', 413, str(LIMIT)),
    "1mb-oip": Case(INFER, oip(data=["a" * MB]), 413, str(LIMIT)),
    "1mb-openai": Case(OPENAI, b"{" + OPENAI_OK + b'"input": "' + b"a" * MB + b'"}', 413, "limit"),
    "60kb-text": Case(EMBED, b'{"texts": ["' + b"a" * 60000 + b'"]}', 422, "limit is 2000"),
    "60kb-oip": Case(INFER, oip(data=["a" * 60000]), 400, "limit is 2000"),
    # deep nesting: over the body limit, past the parser's depth, and deep but valid JSON
    "nest-100000": Case(PREDICT, nested(100_000, closed=False), 413, str(LIMIT)),
    "nest-60000": Case(PREDICT, nested(60_000, closed=False), 400, "not valid JSON"),
    "nest-2000": Case(INFER, b'{"inputs": ' + nested(2000) + b"}", 400, "not valid JSON"),
    "nest-1010": Case(OPENAI, b'{"input": ' + nested(1010) + b"}", 400, "not valid JSON"),
    "nest-100": Case(PREDICT, b'{"text": ' + nested(100) + b"}", 422, "must be a string"),
    # wrong content types: the body is read as JSON whatever the header says
    "form": Case(PREDICT, b"text=hello", 400, "not valid JSON", FORM),
    "multipart": Case(
        EMBED,
        b'--b\r\ncontent-disposition: form-data; name="texts"\r\n\r\nhi\r\n--b--\r\n',
        400,
        "not valid JSON",
        {"content-type": "multipart/form-data; boundary=b"},
    ),
    "xml": Case(
        INFER,
        b"<inputs><text>hi</text></inputs>",
        400,
        "not valid JSON",
        {"content-type": "application/xml"},
    ),
    "utf16": Case(
        PREDICT,
        '{"text": "hi"}'.encode("utf-16"),
        400,
        "not valid JSON",
        {"content-type": "application/json; charset=utf-16"},
    ),
    "form-openai": Case(OPENAI, b"input=hi&model=x", 400, "not valid JSON", FORM),
    # compressed bodies: the limit holds on the inflated size
    "gzip-bomb": Case(PREDICT, gzip.compress(b" " * (20 * MB)), 413, "inflates to over", GZIP),
    "gzip-bomb-oip": Case(INFER, gzip.compress(b"[" * MB), 413, "inflates to over", GZIP),
    "gzip-not-gzip": Case(OPENAI, b'{"input": "hi"}', 400, "not valid gzip data", GZIP),
    "gzip-cut": Case(EMBED, gzip.compress(b'{"texts": ["a"]}')[:-6], 400, "not valid gzip", GZIP),
    "brotli": Case(PREDICT, b"\x1b\x00", 415, "not supported", {"content-encoding": "br"}),
    # duplicated keys: parsers disagree on which one wins, so none does
    "dup-top": Case(PREDICT, b'{"text": "good", "text": "bad"}', 400, "'text' appears more"),
    "dup-embed": Case(EMBED, b'{"texts": ["a"], "texts": ["b"]}', 400, "more than once"),
    "dup-oip-tensor": Case(
        INFER,
        b'{"inputs": [{"name": "text", "name": "text", "datatype": "BYTES", "shape": [1], '
        b'"data": ["a"]}]}',
        400,
        "'name' appears more",
    ),
    "dup-openai": Case(OPENAI, b"{" + OPENAI_OK + OPENAI_OK + b'"input": "a"}', 400, "more than"),
    # huge arrays
    "texts-9": Case(EMBED, dumps({"texts": ["a"] * 9}), 422, "limit is 8"),
    "texts-30000": Case(PREDICT, dumps({"texts": [0] * 30000}), 422, "limit is 8"),
    "array-body": Case(PREDICT, dumps([0] * 30000), 422, "JSON object"),
    "oip-data-12000": Case(INFER, oip(data=["a"] * 12000, shape=[12000]), 400, "limit is 8"),
    "oip-shape-2^62": Case(INFER, oip(shape=[2**62]), 400, "shape"),
    "oip-outputs-3000": Case(
        INFER,
        oip({"inputs": [tensor(["a"])], "outputs": [{"name": "label"}] * 3000}),
        400,
        "more than once",
    ),
    "openai-inputs-9": Case(
        OPENAI,
        b"{" + OPENAI_OK + b'"input": ["a","a","a","a","a","a","a","a","a"]}',
        400,
        "limit is 8",
    ),
    "oip-output-unknown-field": Case(
        INFER,
        oip({"inputs": [tensor(["a"])], "outputs": [{"name": "score", "binary": True}]}),
        400,
        "unknown field(s) in output 'score': binary",
    ),
    # negative, NaN and infinite numbers where numbers are expected
    "oip-shape-negative": Case(INFER, oip(shape=[-1]), 400, "shape [N]"),
    "oip-shape-fraction": Case(INFER, oip(shape=[1.5]), 400, "list of integers"),
    "oip-shape-nan": Case(
        INFER, b'{"inputs": [{"name": "text", "shape": [NaN]}]}', 400, "not valid JSON"
    ),
    "oip-shape-inf": Case(
        INFER, b'{"inputs": [{"name": "text", "shape": [1e999]}]}', 400, "not valid JSON"
    ),
    "oip-shape-infinity": Case(
        INFER, b'{"inputs": [{"shape": [-Infinity]}]}', 400, "not valid JSON"
    ),
    "oip-timeout-negative": Case(
        INFER, oip({"inputs": [tensor(["a"])], "parameters": {"timeout": -5}}), 400, "timeout"
    ),
    "oip-timeout-zero": Case(
        INFER, oip({"inputs": [tensor(["a"])], "parameters": {"timeout": 0}}), 400, "timeout"
    ),
    "oip-timeout-string": Case(
        INFER, oip({"inputs": [tensor(["a"])], "parameters": {"timeout": "9"}}), 400, "timeout"
    ),
    "oip-binary-size-negative": Case(
        INFER,
        oip(
            {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "parameters": BINARY}]}
        ),
        400,
        "binary_data_size",
    ),
    "openai-dimensions-negative": Case(
        OPENAI, b"{" + OPENAI_OK + b'"input": "a", "dimensions": -1}', 400, "dimensions"
    ),
    "openai-dimensions-nan": Case(
        OPENAI, b"{" + OPENAI_OK + b'"input": "a", "dimensions": NaN}', 400, "not valid JSON"
    ),
    "text-number": Case(PREDICT, b'{"text": -1e308}', 422, "must be a string"),
    # empty bodies
    "empty-predict": Case(PREDICT, b"", 400, "empty"),
    "empty-embed": Case(EMBED, b"", 400, "empty"),
    "empty-oip": Case(INFER, b"", 400, "empty"),
    "empty-openai": Case(OPENAI, b"", 400, "empty"),
    "blank-body": Case(PREDICT, b"  \r\n ", 400, "not valid JSON"),
    "null-body": Case(EMBED, b"null", 422, "JSON object"),
}
for value in (
    "-1",
    "0",
    "-0",
    "nan",
    "NaN",
    "inf",
    "-inf",
    "Infinity",
    "1e999",
    "1_0",
    "0x10",
    "",
    "\xa0",
):
    for path in (PREDICT, INFER, OPENAI):
        body = {
            PREDICT: b'{"text": "a"}',
            INFER: oip(),
            OPENAI: b"{" + OPENAI_OK + b'"input": "a"}',
        }[path]
        CASES[f"timeout-{value!r}-{path}"] = Case(
            path, body, 400, "timeout", JSON | {"x-request-timeout": value}
        )
CASES["timeout-400-digits"] = Case(  # overflows to inf: positive, but not finite
    PREDICT, b'{"text": "a"}', 400, "finite, positive", JSON | {"x-request-timeout": "9" * 400}
)


@pytest.mark.parametrize("name", sorted(CASES))
def test_hostile_input_gets_its_4xx(client: httpx.Client, name: str) -> None:
    case = CASES[name]
    headers = {k.encode(): v.encode("latin-1") for k, v in case.headers.items()}  # as they are
    r = client.post(case.path, content=case.body, headers=headers)
    assert r.status_code == case.status, r.text[:500]
    assert r.headers["content-type"] == "application/json"
    error = r.json()["error"]
    if case.path == OPENAI:  # OpenAI's shape
        assert set(error) == {"message", "type", "param", "code"}
        error = error["message"]
    assert case.message in error
    assert_no_leak(r.text)


def test_a_streamed_1mb_body_is_413(client: httpx.Client) -> None:
    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit holds while reading
        yield b'{"text": "'
        for _ in range(250):
            yield b"a" * 4096
        yield b'"}'

    r = client.post(PREDICT, content=chunks())
    assert r.status_code == 413 and str(LIMIT) in r.json()["error"]


def test_the_content_type_is_not_checked(client: httpx.Client) -> None:
    """Documented: the body is read as JSON whatever its Content-Type (curl -d sends a form)."""
    for kind in ("text/plain", "application/x-www-form-urlencoded", "application/octet-stream"):
        r = client.post(PREDICT, content=b'{"text": "fine"}', headers={"content-type": kind})
        assert r.status_code == 200, (kind, r.text)


# -- raw sockets: what httpx will not send -----------------------------------------------------


@dataclass
class Reply:
    status: int | None  # None: the server closed the connection without answering
    headers: dict[str, str]
    body: bytes


def exchange(server: Server, data: bytes, *, stop: str = "read") -> Reply:
    """Sends ``data``; then reads the reply (``read``), or first half-closes (``shutdown``), or
    closes the socket at once (``close``)."""
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(data)  # the server may answer, and close, before it has all of it
        if stop == "close":
            return Reply(None, {}, b"")
        if stop == "shutdown":
            sock.shutdown(socket.SHUT_WR)
        raw = b""
        while not complete(raw):
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            raw += chunk
    return parse_reply(raw)


def parse_reply(raw: bytes) -> Reply:
    if not raw:
        return Reply(None, {}, b"")
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines)
    return Reply(int(status_line.split()[1]), headers, body)


def complete(raw: bytes) -> bool:
    head, sep, body = raw.partition(b"\r\n\r\n")
    found = re.search(rb"content-length: *(\d+)", head, re.IGNORECASE)
    return bool(sep) and found is not None and len(body) >= int(found.group(1))


def request(path: str, body: bytes, *headers: bytes, length: int | None = None) -> bytes:
    size = len(body) if length is None else length
    lines = [f"POST {path} HTTP/1.1".encode(), b"host: test", b"content-length: %d" % size]
    return b"\r\n".join([*lines, *headers, b"", body])


@pytest.mark.parametrize("path", [PREDICT, INFER, OPENAI])
@pytest.mark.parametrize("stop", ["close", "shutdown"])
def test_a_truncated_body_leaves_the_server_serving(
    server: Server, client: httpx.Client, path: str, stop: str
) -> None:
    """Content-Length says 100 bytes, 10 come, and the client goes away: the request gets no
    answer, is counted as a 499 (a client that left) and not as a refusal, and nothing
    leaks."""
    before = client.get("/metrics").text
    reply = exchange(server, request(path, b'{"text": "', length=100), stop=stop)
    assert reply.status is None, reply
    assert client.post(PREDICT, json={"text": "still here"}).status_code == 200
    after = client.get("/metrics").text
    assert total(after, "inferline_requests_total", 'status="499"') == 1 + total(
        before, "inferline_requests_total", 'status="499"'
    )
    refused = 'reason="invalid"'
    assert total(after, "inferline_rejected_total", refused) == total(
        before, "inferline_rejected_total", refused
    )


@pytest.mark.parametrize("path", [PREDICT, INFER])
def test_byte_counts_of_5000_digits(server: Server, path: str) -> None:
    """Python's int() refuses strings over 4,300 digits: a Content-Length or an OIP header
    length that long, zero-padded, was a 500."""
    body = b'{"text": "Works great."}' if path == PREDICT else oip()

    def with_length(length: bytes, *headers: bytes) -> Reply:
        sent = request(path, body, *headers)
        return exchange(server, sent.replace(b"length: %d" % len(body), b"length: " + length))

    padded = b"0" * 5000
    assert with_length(padded + b"%d" % len(body)).status == 200
    reply = with_length(padded + b"9" * 18)  # a count httptools takes: the body limit's 413
    assert reply.status == 413 and str(LIMIT) in json.loads(reply.body)["error"], reply
    reply = with_length(b"9" * 5000)  # past 64 bits: httptools' malformed request
    assert reply.status == 400 and "malformed" in json.loads(reply.body)["error"], reply
    if path == INFER:
        header = b"inference-header-content-length: "
        sent = request(path, body, header + padded + b"%d" % len(body))
        assert exchange(server, sent).status == 200
        reply = exchange(server, request(path, body, header + b"9" * 5000))
        assert reply.status == 400, reply
        assert "Inference-Header-Content-Length" in json.loads(reply.body)["error"]


def total(metrics: str, name: str, label: str) -> float:
    """The sum of a counter's series that carry ``label``."""
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith(name + "{") and label in line
    )


@pytest.mark.parametrize(
    "headers",
    [
        [b"x-h%d: v" % i for i in range(5000)],  # many small headers
        [b"x-big: " + b"a" * MB],  # one huge header
        [b"x-h%d: %s" % (i, b"b" * 900) for i in range(40)],  # many large ones
    ],
    ids=["5000-headers", "1mb-header", "40x900-bytes"],
)
def test_header_floods_are_431(server: Server, headers: list[bytes]) -> None:
    reply = exchange(server, request(PREDICT, b'{"text": "fine"}', *headers))
    assert reply.status == 431, reply
    assert "16384" in json.loads(reply.body)["error"]
    assert_no_leak(reply.body.decode())


def test_a_header_that_never_ends_is_431_before_it_is_all_in_memory(server: Server) -> None:
    """The app checks the headers' size once they end; a header of hundreds of MB never
    ends in time. The connection refuses it while it arrives, and the server's memory stays
    put."""
    host, port = server.url.removeprefix("http://").split(":")
    rss_before = rss_kb(server)
    sent, raw = 0, b""
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nhost: test\r\nx-big: ")
        try:
            while sent < 256 * MB and not raw:
                sock.sendall(b"a" * (64 * 1024))
                sent += 64 * 1024
                if select.select([sock], [], [], 0)[0]:
                    raw = sock.recv(65536)
        except (BrokenPipeError, ConnectionResetError):
            pass
        if not raw:
            with contextlib.suppress(ConnectionResetError):
                raw = sock.recv(65536)
    reply = parse_reply(raw)
    assert reply.status == 431, (sent, reply)
    assert sent < 16 * MB  # refused early, not at the end
    assert rss_kb(server) - rss_before < 64 * 1024  # KiB: no copy of the header kept
    assert httpx.get(server.url + "/health").status_code == 200


def rss_kb(server: Server) -> int:
    status = Path(f"/proc/{server.proc.pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", status).group(1))  # type: ignore[union-attr]


MALFORMED = {
    "negative-length": b"POST /predict HTTP/1.1\r\nhost: t\r\ncontent-length: -1\r\n\r\n",
    "length-and-chunked": b"POST /predict HTTP/1.1\r\nhost: t\r\ncontent-length: 5\r\n"
    b"transfer-encoding: chunked\r\n\r\n0\r\n\r\n",
    "bad-chunk-size": b"POST /embed HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n"
    b"zz\r\nabc\r\n0\r\n\r\n",
    "nul-in-header": b"POST /predict HTTP/1.1\r\nhost: t\r\nx-request-timeout: 1\x002\r\n"
    b"content-length: 2\r\n\r\n{}",
    "utf8-in-target": b"GET /v2/models/\xff\xfe HTTP/1.1\r\nhost: t\r\n\r\n",
    "two-lengths": b"POST /predict HTTP/1.1\r\nhost: t\r\ncontent-length: 2\r\n"
    b"content-length: 3\r\n\r\n{}",
    "tls-hello": b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + b"\x00" * 64,
}


def test_a_transfer_coding_other_than_chunked_is_501(server: Server) -> None:
    data = (
        b"POST /predict HTTP/1.1\r\nhost: t\r\ntransfer-encoding: gzip, chunked\r\n\r\n"
        b'10\r\n{"text": "fine"}\r\n0\r\n\r\n'
    )
    reply = exchange(server, data)
    assert reply.status == 501, reply
    assert "use chunked alone" in json.loads(reply.body)["error"]


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_http_is_400(server: Server, name: str) -> None:
    """Refused by the HTTP parser before the app, with a JSON body all the same."""
    reply = exchange(server, MALFORMED[name])
    assert reply.status == 400, reply
    assert reply.headers["content-type"] == "application/json"
    assert reply.headers["connection"] == "close"
    assert json.loads(reply.body)["error"].startswith("malformed HTTP request")
    assert_no_leak(reply.body.decode("latin-1"))


UPGRADE = b"upgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-version: 13\r\n"
UPGRADE += b"sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n"


def test_a_websocket_upgrade_is_served_as_plain_http(server: Server) -> None:
    """There are no WebSocket routes: the request is answered as HTTP (it once got a 500)."""
    get = exchange(server, b"GET /predict HTTP/1.1\r\nhost: t\r\n" + UPGRADE + b"\r\n")
    assert get.status == 405 and "error" in json.loads(get.body), get
    post = exchange(server, request(PREDICT, b'{"text": "fine"}', UPGRADE.rstrip()))
    assert post.status == 200 and json.loads(post.body)["label"] == "Positive", post


H2C = [b"upgrade: h2c", b"connection: Upgrade, HTTP2-Settings", b"http2-settings: AAMAAABk"]
NEGATIVE = b'{"text": "Terrible, it broke in a day."}'


def conversation(server: Server, *sends: bytes, replies: int = 1) -> list[Reply]:
    """Sends each piece apart (separate TCP segments) on one connection; reads ``replies``."""
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for piece in sends:
            sock.sendall(piece)
            time.sleep(0.02)
        raw, found = b"", list[Reply]()
        while len(found) < replies:
            chunk = sock.recv(65536)
            if not chunk:
                break
            raw += chunk
            while complete(raw):
                head, _, rest = raw.partition(b"\r\n\r\n")
                size = int(dict(parse_reply(head + b"\r\n\r\n").headers)["content-length"])
                found.append(parse_reply(head + b"\r\n\r\n" + rest[:size]))
                raw = rest[size:]
    return found


def label(reply: Reply) -> str:
    assert reply.status == 200, reply
    return str(json.loads(reply.body)["label"])


def test_an_h2c_upgrade_offer_is_served_as_http1_with_its_body(server: Server) -> None:
    """`curl --http2`, Java's HttpClient and RestClient, Ktor: they offer h2c on a POST with
    a body. The offer is declined and the body is served (httptools alone drops it)."""
    head = request(PREDICT, b"", *H2C, length=len(NEGATIVE))
    assert label(exchange(server, head + NEGATIVE)) == "Negative"
    (split,) = conversation(server, head, NEGATIVE[:9], NEGATIVE[9:])
    assert label(split) == "Negative"
    chunked = request(PREDICT, b"", *H2C, b"transfer-encoding: chunked").replace(
        b"content-length: 0\r\n", b""
    )
    body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(NEGATIVE), NEGATIVE)
    (whole,) = conversation(server, chunked + body)
    assert label(whole) == "Negative"
    (bytewise,) = conversation(server, chunked, *(bytes([b]) for b in body[:12]), body[12:])
    assert label(bytewise) == "Negative"


def test_after_a_declined_upgrade_the_connection_serves_the_next_request(
    server: Server,
) -> None:
    first = request(PREDICT, NEGATIVE, *H2C)
    second = request(PREDICT, b'{"text": "Works great, love it."}')
    later = conversation(server, first, second, replies=2)  # keep-alive
    pipelined = conversation(server, first + second, replies=2)
    for replies in (later, pipelined):
        assert [label(r) for r in replies] == ["Negative", "Positive"]


def test_a_declined_upgrade_with_broken_chunks_is_a_json_400(server: Server) -> None:
    head = request(PREDICT, b"", *H2C, b"transfer-encoding: chunked")
    reply = exchange(server, head.replace(b"content-length: 0\r\n", b"") + b"zz\r\nab\r\n")
    assert reply.status == 400 and "malformed" in json.loads(reply.body)["error"], reply


def test_past_the_connection_cap_is_a_json_503(server_factory: ServerFactory) -> None:
    capped = server_factory({"INFERLINE_MAX_CONNECTIONS": "2"})
    host, port = capped.url.removeprefix("http://").split(":")
    idle = [socket.create_connection((host, int(port)), timeout=10) for _ in range(2)]
    try:
        reply = exchange(capped, b"GET /health HTTP/1.1\r\nhost: t\r\n\r\n")
    finally:
        for sock in idle:
            sock.close()
    assert reply.status == 503, reply
    assert reply.headers["retry-after"] == "1" and reply.headers["connection"] == "close"
    assert "connections" in json.loads(reply.body)["error"]
    with httpx.Client(base_url=capped.url, timeout=10) as c:  # the cap is not a lasting state
        assert c.get("/health/ready").status_code == 200


def test_percent_encoded_garbage_in_the_path_is_404(client: httpx.Client) -> None:
    for path in ("/v2/models/%ff%00", "/v2/models/%2e%2e%2f%2e%2e%2fetc", "/%00"):
        r = client.get(path)
        assert r.status_code == 404 and isinstance(r.json()["error"], str)
        assert_no_leak(r.text)


def test_a_failed_load_shows_no_path(failed_server: Server) -> None:
    with httpx.Client(base_url=failed_server.url, timeout=10) as c:
        for r in (
            c.get("/health/ready"),
            c.get("/v2/health/ready"),
            c.post(PREDICT, json={"text": "a"}),
        ):
            assert r.status_code == 503
            assert_no_leak(r.text)


def test_the_server_is_healthy_after_the_corpus(
    server: Server, client: httpx.Client, log_start: int
) -> None:
    assert client.get("/health/ready").status_code == 200
    r = client.post(PREDICT, json={"texts": ["Works great.", "Broke in a day."]})
    assert r.status_code == 200
    assert [x["label"] for x in r.json()["results"]] == ["Positive", "Negative"]
    assert "Traceback" not in server.output()[log_start:]
