"""Refusals answered at the headers (App.early_refusal, api/wire.py): under overload a request
to a full queue gets the same 429 as before, with no ASGI task, and the connection goes on.

One lane runs one long batch of 64 texts, one more batch waits for it in the engine, and 64
more texts wait in the queue: the queue stays full for the length of the first batch (about
two seconds here), and the requests below arrive then.
"""

from __future__ import annotations

import json
import re
import socket
import time
from typing import Any

import httpx

from tests.conftest import Server, ServerFactory
from tests.integration.saturation import SETTINGS, saturated

PREDICT = b'{"text": "great phone"}'


def exchange(
    sock: socket.socket, data: bytes, responses: int = 1
) -> list[tuple[int, dict[str, str], bytes]]:
    """Send ``data`` and read ``responses`` whole HTTP/1.1 responses (Content-Length framed)."""
    sock.sendall(data)
    out: list[tuple[int, dict[str, str], bytes]] = []
    buffer = b""
    while len(out) < responses:
        while b"\r\n\r\n" not in buffer:
            chunk = sock.recv(65536)
            assert chunk, f"the server closed the connection after {len(out)} response(s)"
            buffer += chunk
        head, buffer = buffer.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
        length = int(headers["content-length"])
        while len(buffer) < length:
            chunk = sock.recv(65536)
            assert chunk, "the server closed the connection mid-body"
            buffer += chunk
        out.append((status, headers, buffer[:length]))
        buffer = buffer[length:]
    return out


def request(path: str, body: bytes, extra: str = "") -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n{extra}\r\n"
    )
    return head.encode() + body


def connect(server: Server) -> socket.socket:
    port = int(server.url.rsplit(":", 1)[1])
    return socket.create_connection(("127.0.0.1", port), timeout=30)


def test_refusals_at_the_headers_keep_the_connection_going(busy_server: Server) -> None:
    with saturated(busy_server, "sentiment"), connect(busy_server) as sock:
        ((status, headers, body),) = exchange(sock, request("/predict", PREDICT))
        assert status == 429
        assert headers["content-type"] == "application/json"
        assert headers["retry-after"].isdigit() and int(headers["retry-after"]) >= 1
        assert "date" in headers and "connection" not in headers
        assert json.loads(body)["error"].startswith("the sentiment queue is full")
        # Not JSON at all: refused before the body is read, as the handler always did.
        ((status, _, _),) = exchange(sock, request("/predict", b"\xff not json"))
        assert status == 429
        # The headers alone get the answer; the body that follows is skipped, and the
        # next request on the connection is served.
        head, _, body = request("/predict", PREDICT).partition(b"\r\n\r\n")
        ((status, _, _),) = exchange(sock, head + b"\r\n\r\n")
        assert status == 429
        ((status, _, live),) = exchange(sock, body + b"GET /health/live HTTP/1.1\r\n\r\n")
        assert status == 200 and json.loads(live) == {"status": "alive"}


def test_chunked_and_pipelined_requests_are_answered_in_order(busy_server: Server) -> None:
    chunked = (
        b"POST /predict HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n"
        b'7\r\n{"text"\r\n10\r\n: "great phone"}\r\n0\r\n\r\n'
    )
    pipelined = chunked + request("/predict", PREDICT) + b"GET /health/live HTTP/1.1\r\n\r\n"
    with saturated(busy_server, "sentiment"), connect(busy_server) as sock:
        answers = exchange(sock, pipelined, responses=3)
    assert [status for status, _, _ in answers] == [429, 429, 200]


def test_connection_close_and_http_1_0_close_after_the_refusal(busy_server: Server) -> None:
    with saturated(busy_server, "sentiment"):
        for extra, version in (("Connection: close\r\n", "1.1"), ("", "1.0")):
            data = request("/predict", PREDICT, extra).replace(
                b"HTTP/1.1", f"HTTP/{version}".encode(), 1
            )
            with connect(busy_server) as sock:
                ((status, headers, _),) = exchange(sock, data)
                assert status == 429 and headers["connection"] == "close"
                assert sock.recv(1) == b"", "the connection stayed open"


def test_every_protocol_refuses_a_full_queue_in_its_own_shape(busy_server: Server) -> None:
    oip = b'{"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["ok"]}]}'
    with saturated(busy_server, "sentiment"), connect(busy_server) as sock:
        for path in ("/v2/models/sentiment/infer", "/v2/models/sentiment/versions/1/infer"):
            ((status, _, body),) = exchange(sock, request(path, oip))
            assert status == 429 and "queue is full" in json.loads(body)["error"]
        ((status, _, _),) = exchange(sock, request("/v2/models/sentiment/versions/9/infer", oip))
        assert status == 404, "an unknown version is 404 whatever the queue"
        ((status, _, _),) = exchange(sock, request("/embed", b'{"texts": ["ok"]}'))
        assert status == 200, "the other model's queue has room"
    openai = b'{"input": "ok", "model": "all-MiniLM-L6-v2"}'
    with saturated(busy_server, "embedding"), connect(busy_server) as sock:
        ((status, headers, body),) = exchange(sock, request("/v1/embeddings", openai))
        assert status == 429 and headers["retry-after"].isdigit()
        error = json.loads(body)["error"]
        assert (error["type"], error["code"]) == ("rate_limit_error", "rate_limit_exceeded")
        ((status, _, _),) = exchange(sock, request("/embed", b'{"texts": ["ok"]}'))
        assert status == 429


def test_refusals_at_the_headers_are_counted_and_logged(busy_server: Server) -> None:
    def counts() -> tuple[float, float]:
        text = httpx.get(busy_server.url + "/metrics").text
        rejected = re.search(r'^inferline_rejected_total\{reason="queue_full"\} (\S+)$', text, re.M)
        requests = re.search(
            r'^inferline_requests_total\{model="sentiment",protocol="rest",status="429"\} (\S+)$',
            text,
            re.M,
        )
        return (
            float(rejected.group(1)) if rejected else 0.0,
            float(requests.group(1)) if requests else 0.0,
        )

    before = counts()
    with saturated(busy_server, "sentiment"), connect(busy_server) as sock:
        mid = counts()
        for _ in range(5):
            ((status, _, _),) = exchange(sock, request("/predict?probe=1", PREDICT))
            assert status == 429
        after = counts()
    assert after[0] - mid[0] == 5 and after[1] - mid[1] == 5
    assert mid[0] >= before[0]

    def logged() -> list[dict[str, object]]:
        lines = [json.loads(line) for line in busy_server.output().splitlines() if line[:1] == "{"]
        return [line for line in lines if line.get("path") == "/predict"]

    # A line each, or past 20 a second a count in a "refusals" line (written once a second).
    give_up = time.monotonic() + 5
    while sum(int(str(line.get("count", 1))) for line in logged() if line["status"] == "429") < 5:
        assert time.monotonic() < give_up, "the refusals were not all logged"
        time.sleep(0.1)
    assert {line["model"] for line in logged() if line["status"] == "429"} == {"sentiment"}


def test_a_queue_that_fills_while_the_body_arrives_refuses_under_its_model(
    busy_server: Server,
) -> None:
    """The route's check passes at the headers; the queue fills while the body is on its
    way, and admission refuses the texts: a 429 counted and logged under the model."""
    oip = b'{"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["ok"]}]}'
    path = "/v2/models/sentiment/infer"
    whole = request(path, oip)
    cut = len(whole) - len(oip) // 2

    def sample(series: str) -> float:
        text = httpx.get(busy_server.url + "/metrics").text
        found = re.search(rf"^{re.escape(series)} (\S+)$", text, re.M)
        return float(found.group(1)) if found else 0.0

    def logged() -> list[dict[str, object]]:
        lines = [json.loads(line) for line in busy_server.output().splitlines() if line[:1] == "{"]
        return [line for line in lines if line.get("path") == path and line["status"] == "429"]

    refused = 'inferline_requests_total{model="sentiment",protocol="oip_rest",status="429"}'
    before, earlier = sample(refused), len(logged())
    with connect(busy_server) as sock:
        sock.sendall(whole[:cut])
        deadline = time.monotonic() + 30
        while sample("inferline_inflight_requests") < 1:  # its handler waits for the body
            assert time.monotonic() < deadline, "the request never started"
            time.sleep(0.01)
        with saturated(busy_server, "sentiment"):
            ((status, _, body),) = exchange(sock, whole[cut:])
    assert status == 429 and "queue is full" in json.loads(body)["error"]
    assert sample(refused) - before == 1
    give_up = time.monotonic() + 5  # the access log is written by a thread
    while len(logged()) == earlier:
        assert time.monotonic() < give_up, "the refusal was not logged"
        time.sleep(0.1)
    [line] = logged()[earlier:]
    assert line["model"] == "sentiment"


def test_with_api_keys_a_missing_key_is_401_before_any_429(server_factory: ServerFactory) -> None:
    server = server_factory({**SETTINGS, "INFERLINE_API_KEYS": "k1,k2"})
    with saturated(server, "sentiment", {"Authorization": "Bearer k1"}), connect(server) as sock:
        for extra in ("", "Authorization: Bearer nope\r\n", "X-API-Key: k3\r\n"):
            ((status, headers, _),) = exchange(sock, request("/predict", PREDICT, extra))
            assert status == 401 and "www-authenticate" in headers
        for extra in ("Authorization: Bearer k1\r\n", "X-API-Key: k2\r\n"):
            # A valid key is refused at the headers: the body that follows is skipped.
            head, _, body = request("/predict", PREDICT, extra).partition(b"\r\n\r\n")
            ((status, headers, _),) = exchange(sock, head + b"\r\n\r\n")
            assert status == 429 and headers["retry-after"].isdigit()
            ((status, _, _),) = exchange(sock, body + b"GET /health/live HTTP/1.1\r\n\r\n")
            assert status == 200
        # A "%" in the URL sends the request down the normal path (the handler's own check).
        keyed = request("/predict?q=%41", PREDICT, "Authorization: Bearer k2\r\n")
        ((status, _, _),) = exchange(sock, keyed)
        assert status == 429
    # Either way a refusal is counted under the model whose queue was full.
    metrics = httpx.get(server.url + "/metrics").text
    found = re.search(
        r'^inferline_requests_total\{model="sentiment",protocol="rest",status="429"\} (\S+)$',
        metrics,
        re.M,
    )
    assert found and float(found.group(1)) >= 3


def test_with_tracing_a_refusal_at_the_headers_has_its_server_span(
    server_factory: ServerFactory,
) -> None:
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    env = {"OTEL_TRACES_EXPORTER": "console", "OTEL_BSP_SCHEDULE_DELAY": "50"}
    server = server_factory({**SETTINGS, **env})
    parent = f"traceparent: 00-{trace_id}-00f067aa0ba902b7-01\r\n"
    with saturated(server, "sentiment"), connect(server) as sock:
        ((status, _, _),) = exchange(sock, request("/predict", PREDICT, parent))
        assert status == 429

    def spans() -> list[dict[str, Any]]:
        """The console exporter's spans: indented JSON objects among the log lines."""
        decoder, text, found = json.JSONDecoder(), server.output(), []
        for match in re.finditer(r"^\{\n", text, re.M):
            found.append(decoder.raw_decode(text, match.start())[0])
        return found

    give_up = time.monotonic() + 10
    while not (mine := [s for s in spans() if s["context"]["trace_id"] == f"0x{trace_id}"]):
        assert time.monotonic() < give_up, "no span for the refused request"
        time.sleep(0.1)
    (span,) = mine
    assert span["name"] == "POST /predict" and span["kind"] == "SpanKind.SERVER"
    assert span["parent_id"] == "0x00f067aa0ba902b7"
    attributes = span["attributes"]
    assert attributes["http.response.status_code"] == 429
    assert attributes["inferline.model"] == "sentiment"
