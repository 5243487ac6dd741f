"""OpenAIEngine and the chat relay against a real HTTP server that speaks OpenAI's wire
format (tests/integration/fake_openai.py), through a real inferline process: embeddings,
streamed and whole completions, the official client, cancellation, backpressure, upstream
errors, the API key, and the TTFT/TPS metrics."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import orjson
import pytest
from openai import APIError, OpenAI
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Server, ServerFactory
from tests.integration.fake_openai import REPLY, FakeOpenAI, Running, vector

pytestmark = pytest.mark.integration

EMBED_KEY = "sk-embed-5ecret-never-logged"
CHAT_KEY = "sk-chat-5ecret-never-logged"
CHAT = "review-writer"  # the model id clients use; the upstream knows it as upstream-chat
SLASHED = "org/review-writer"  # a model id with a slash, as Hugging Face names them


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeOpenAI]:
    running = Running(FakeOpenAI())
    yield running.app
    running.stop()


@pytest.fixture(scope="module")
def gateway(
    upstream: FakeOpenAI, server_factory: ServerFactory, tmp_path_factory: pytest.TempPathFactory
) -> Server:
    tmp = tmp_path_factory.mktemp("openai-gateway")
    (tmp / "chat-key").write_text(CHAT_KEY + "\n")
    config = tmp / "models.yaml"  # YAML here; test_oip_engine.py uses TOML
    config.write_text(
        f"""
models:
  embedding:
    engine: openai
    url: {upstream.url}
    remote_model: text-embedding-fake
    api_key_env: FAKE_EMBED_KEY
    encoding_format: base64
    http2: true  # HTTP/2 is negotiated over TLS only: here it is HTTP/1.1 with h2 loaded
    health_interval_s: 0.5
  {CHAT}:
    engine: openai
    url: {upstream.url}
    remote_model: upstream-chat
    api_key_file: {tmp / "chat-key"}
    max_retries: 2
    backoff_s: 0.01
    timeout_s: 10
    health_interval_s: 0.5
  {SLASHED}:
    engine: openai
    url: {upstream.url}
    remote_model: upstream-chat
    api_key_file: {tmp / "chat-key"}
    health_interval_s: 0.5
"""
    )
    return server_factory({"INFERLINE_MODELS_CONFIG": str(config), "FAKE_EMBED_KEY": EMBED_KEY})


@pytest.fixture
def client(gateway: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.url, timeout=30) as c:
        yield c


def chat(content: str, stream: bool = True) -> dict[str, object]:
    return {"model": CHAT, "messages": [{"role": "user", "content": content}], "stream": stream}


def sse_data(text: str) -> list[str]:
    return [line[6:] for line in text.split("\n\n") if line.startswith("data: ")]


def test_embeddings_come_from_the_upstream(client: httpx.Client, upstream: FakeOpenAI) -> None:
    texts = ["a red bicycle", "The battery lasts all day and the screen is gorgeous."]
    response = client.post("/v1/embeddings", json={"model": "all-MiniLM-L6-v2", "input": texts})
    assert response.status_code == 200, response.text
    got = [d["embedding"] for d in response.json()["data"]]
    np.testing.assert_allclose(got, [vector(t) for t in texts], atol=1e-6)
    embed = client.post("/embed", json={"texts": texts}).json()
    np.testing.assert_allclose(embed["embeddings"], got, atol=1e-6)
    _, headers, body = next(r for r in reversed(upstream.requests) if r[0] == "/v1/embeddings")
    assert body["model"] == "text-embedding-fake" and body["input"] == texts
    assert headers["authorization"] == f"Bearer {EMBED_KEY}"
    assert client.post("/predict", json={"text": "great"}).status_code == 200  # local ONNX
    # A text of zero-width characters is nothing to the local model, and refused there; a
    # remote model tokenises in its own way, so it goes upstream.
    assert client.post("/predict", json={"text": "\u200b"}).status_code == 422
    remote = client.post("/v1/embeddings", json={"model": "all-MiniLM-L6-v2", "input": "\u200b"})
    assert remote.status_code == 200, remote.text


def test_a_callers_deadline_ends_the_upstream_call_and_spares_the_breaker(
    client: httpx.Client, upstream: FakeOpenAI
) -> None:
    body = {"model": "all-MiniLM-L6-v2", "input": ["slow-3"]}  # 3 s, inside timeout_s (30)
    for _ in range(4):  # more than failure_threshold (3) in a row
        response = client.post("/v1/embeddings", json=body, headers={"x-request-timeout": "0.3"})
        assert response.status_code == 504, response.text
        assert "deadline" in response.json()["error"]["message"]
    deadline = time.monotonic() + 10
    while upstream.abandoned["slow-3"] < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert upstream.abandoned["slow-3"] == 4  # the gateway hung up at each deadline
    assert client.get("/v2/models/embedding/ready").status_code == 200  # breaker closed
    assert client.post("/embed", json={"texts": ["slow-0.1"]}).status_code == 200


def test_stream_is_relayed_in_order(client: httpx.Client, upstream: FakeOpenAI) -> None:
    with client.stream("POST", "/v1/chat/completions", json=chat("hello")) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        text = "".join(response.iter_text())
    data = sse_data(text)
    assert data[-1] == "[DONE]"
    chunks = [orjson.loads(d) for d in data[:-1]]
    assert [c["choices"][0]["delta"]["content"] for c in chunks] == REPLY
    # The last chat request: health checks (GET /v1/models) come at any moment.
    _, headers, body = next(r for r in reversed(upstream.requests) if r[0].endswith("/completions"))
    assert body["model"] == "upstream-chat" and body["stream"] is True
    assert headers["authorization"] == f"Bearer {CHAT_KEY}"


def test_completions_stream_and_whole_answers(client: httpx.Client) -> None:
    body = {"model": CHAT, "prompt": "Say something", "stream": True}
    response = client.post("/v1/completions", json=body)
    data = sse_data(response.text)
    assert [orjson.loads(d)["choices"][0]["text"] for d in data[:-1]] == REPLY
    whole = client.post("/v1/chat/completions", json=chat("hello", stream=False))
    assert whole.status_code == 200
    assert whole.json()["choices"][0]["message"]["content"] == "".join(REPLY)
    assert whole.json()["usage"]["completion_tokens"] == len(REPLY)


def test_official_client_streams(gateway: Server) -> None:
    client = OpenAI(base_url=gateway.url + "/v1", api_key="unused", max_retries=0)
    stream = client.chat.completions.create(
        model=CHAT, messages=[{"role": "user", "content": "hello"}], stream=True
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text == "".join(REPLY)
    client.close()


def test_a_stream_cut_mid_event_ends_with_a_whole_error_event(gateway: Server) -> None:
    """The half event is dropped: the client's parser sees whole events, then the error."""
    with (
        httpx.Client(base_url=gateway.url, timeout=30) as client,
        client.stream("POST", "/v1/chat/completions", json=chat("cut")) as response,
    ):
        assert response.status_code == 200
        text = "".join(response.iter_text())
    assert '"index": 0, "del' not in text and text.endswith("\n\n"), text
    first, error = (orjson.loads(d) for d in sse_data(text))
    assert first["choices"][0]["delta"]["content"] == "Half"
    assert error["error"]["message"].startswith("the upstream failed")
    sdk = OpenAI(base_url=gateway.url + "/v1", api_key="unused", max_retries=0)
    stream = sdk.chat.completions.create(
        model=CHAT, messages=[{"role": "user", "content": "cut"}], stream=True
    )
    with pytest.raises(APIError, match="the upstream failed"):
        for _ in stream:
            pass
    sdk.close()


def test_an_event_of_megabytes_is_relayed_whole(client: httpx.Client) -> None:
    with client.stream("POST", "/v1/chat/completions", json=chat("huge")) as response:
        assert response.status_code == 200
        text = "".join(response.iter_text())
    data = sse_data(text)
    assert orjson.loads(data[0]) == {"pad": "x" * 65536 * 40}
    chunks = [orjson.loads(d) for d in data[1:-1]]
    assert [c["choices"][0]["delta"]["content"] for c in chunks] == REPLY
    assert client.get("/health/live").status_code == 200


def test_client_disconnect_cancels_the_upstream(gateway: Server, upstream: FakeOpenAI) -> None:
    upstream.disconnected.clear()
    with (
        httpx.Client(base_url=gateway.url, timeout=30) as client,
        client.stream("POST", "/v1/chat/completions", json=chat("endless")) as response,
    ):
        lines = response.iter_lines()
        assert next(lines).startswith("data: ")
        assert not upstream.disconnected.is_set()
    # Leaving the blocks closed the connection mid-stream.
    assert upstream.disconnected.wait(10), "the upstream request was not cancelled"


def test_slow_reader_slows_the_upstream(gateway: Server, upstream: FakeOpenAI) -> None:
    upstream.flood_sent = 0
    with (
        httpx.Client(base_url=gateway.url, timeout=30) as client,
        client.stream("POST", "/v1/chat/completions", json=chat("flood")) as response,
    ):
        next(response.iter_bytes())
        time.sleep(1.0)  # the reader stalls; buffers fill, then the upstream must wait
        stalled = upstream.flood_sent
        time.sleep(1.0)
        assert upstream.flood_sent - stalled < 2 * 1024 * 1024
    assert upstream.flood_sent < 256 * 1024 * 1024  # far from everything it wanted to send


def test_rate_limit_is_retried_then_passed_on(client: httpx.Client, upstream: FakeOpenAI) -> None:
    before = metric(client.get("/metrics").text, "inferline_rejected_total", reason="upstream")
    response = client.post("/v1/chat/completions", json=chat("rate-limited"))
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "rate_limit_exceeded"  # the upstream's body
    after = metric(client.get("/metrics").text, "inferline_rejected_total", reason="upstream")
    assert after == before + 1  # a refusal, counted as the app's own are
    assert upstream.attempts["rate-limited"] == 3  # max_retries 2
    # A Retry-After beyond the timeout: no waiting, the client gets it at once.
    started = time.monotonic()
    response = client.post("/v1/chat/completions", json=chat("rate-limited-long"))
    assert response.status_code == 429 and response.headers["retry-after"] == "120"
    assert upstream.attempts["rate-limited-long"] == 1
    assert time.monotonic() - started < 5


def test_upstream_errors(client: httpx.Client, upstream: FakeOpenAI, gateway: Server) -> None:
    response = client.post("/v1/chat/completions", json=chat("flaky"))  # 503, then fine
    assert response.status_code == 200 and upstream.attempts["flaky"] == 2
    for _ in range(5):  # past failure_threshold (3)
        broken = client.post("/v1/chat/completions", json=chat("broken"))
        assert broken.status_code == 502, broken.text
        # An upstream's own 5xx text may name its internals: logged, not passed on.
        error = broken.json()["error"]
        assert error["message"] == f"the upstream of model {CHAT!r} answered 500", error
    assert "The server had an error" in gateway.wait_for_output("The server had an error")
    assert upstream.attempts["broken"] == 5  # a 500 is not retried
    # A 500 may be the request's own doing: it does not open the breaker for everyone.
    assert client.post("/v1/chat/completions", json=chat("hi")).status_code == 200
    bad = client.post("/v1/chat/completions", json=chat("bad", stream=False))
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_value"


@pytest.mark.parametrize("stream", [True, False])
def test_answers_that_are_not_openai_are_502(client: httpx.Client, stream: bool) -> None:
    for prompt in ("redirect", "no-content", "not-json"):
        response = client.post("/v1/chat/completions", json=chat(prompt, stream=stream))
        assert response.status_code == 502, (prompt, response.status_code, response.text)
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}
        assert "10.9.9.9" not in response.text and "location" not in response.headers
    empty = client.post("/v1/chat/completions", json=chat("empty-text", stream=stream))
    assert empty.status_code == 502, empty.text
    # A large answer is checked for its ends only (parsing it would hold the event loop).
    assert client.post("/v1/chat/completions", json=chat("big", stream=stream)).status_code == 200
    cut = client.post("/v1/chat/completions", json=chat("big-cut", stream=stream))
    assert cut.status_code == 502, cut.text[:200]
    # stream: true answered with one JSON body: relayed as that body, not as events
    whole = client.post("/v1/chat/completions", json=chat("json-for-stream", stream=stream))
    assert whole.status_code == 200 and whole.headers["content-type"] == "application/json"
    assert whole.json()["choices"][0]["message"]["content"] == "".join(REPLY)


def test_a_stream_of_another_type_is_relayed_as_it_comes(client: httpx.Client) -> None:
    """stream: true answered with NDJSON: passed on under its type, not buffered; broken,
    it ends where it broke, with no SSE error event written into it."""
    whole = client.post("/v1/chat/completions", json=chat("ndjson"))
    assert whole.status_code == 200 and whole.headers["content-type"] == "application/x-ndjson"
    assert whole.content == b'{"n": 1}\n{"n": 2}\n'
    cut = client.post("/v1/chat/completions", json=chat("ndjson-cut"))
    assert cut.status_code == 200 and cut.content == b'{"n": 1}\n'


def test_upstream_error_bodies_get_openai_shape(client: httpx.Client) -> None:
    vllm = client.post("/v1/chat/completions", json=chat("vllm-error"))
    assert vllm.status_code == 400
    assert vllm.json()["error"] == {
        "message": "max_tokens is too large",
        "type": "BadRequestError",
        "param": None,
        "code": 400,
    }
    tgi = client.post("/v1/chat/completions", json=chat("tgi-error"))
    assert tgi.status_code == 422
    assert tgi.json()["error"] == {
        "message": "Input validation error",
        "type": "validation",
        "param": None,
        "code": None,
    }


def test_the_request_timeout_bounds_the_relay(client: httpx.Client, upstream: FakeOpenAI) -> None:
    """X-Request-Timeout held on every route but the relay, which waited up to timeout_s."""
    for stream in (True, False):
        prompt = f"slow-5-{stream}"
        late = client.post(
            "/v1/chat/completions",
            json=chat(prompt, stream=stream),
            headers={"x-request-timeout": "0.3"},
        )
        assert late.status_code == 504, late.text
        assert late.json()["error"]["code"] == "timeout"
        wait_for_abandoned(upstream, prompt)  # the upstream call was ended
    bad = client.post("/v1/chat/completions", json=chat("hi"), headers={"x-request-timeout": "x"})
    assert bad.status_code == 400 and "timeout" in bad.json()["error"]["message"]
    # The clients' own short deadlines say nothing of the upstream: no breaker opened.
    assert client.post("/v1/chat/completions", json=chat("hi")).status_code == 200
    ok = client.post("/v1/chat/completions", json=chat("hi"), headers={"x-request-timeout": "9"})
    assert ok.status_code == 200


def wait_for_abandoned(upstream: FakeOpenAI, prompt: str, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while upstream.abandoned[prompt] != 1:
        assert time.monotonic() < deadline, "the condition did not hold in time"
        time.sleep(0.02)


def test_the_chat_models_are_listed(client: httpx.Client, gateway: Server) -> None:
    """OpenAI clients discover models by GET /v1/models: the relay's are there too."""
    listed = client.get("/v1/models").json()["data"]
    assert [m["id"] for m in listed] == ["all-MiniLM-L6-v2", SLASHED, CHAT]
    assert all(set(m) == {"id", "object", "created", "owned_by"} for m in listed)
    for name in (CHAT, SLASHED):  # GET /v1/models/org/review-writer, as the SDK sends it
        sdk = OpenAI(base_url=gateway.url + "/v1", api_key="unused", max_retries=0)
        assert sdk.models.retrieve(name).id == name
    assert (
        client.post("/v1/chat/completions", json={**chat("hi"), "model": SLASHED}).status_code
        == 200
    )
    unknown = client.get("/v1/models/gpt-9")
    assert unknown.status_code == 404 and CHAT in unknown.json()["error"]["message"]


def test_client_errors_have_openai_shape(client: httpx.Client) -> None:
    unknown = client.post("/v1/chat/completions", json={**chat("hi"), "model": "gpt-9"})
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "model_not_found"
    bodies: list[object] = [
        {"model": CHAT},
        {"model": CHAT, "messages": []},
        [1],
        {"messages": [{}]},
        {"model": CHAT, "messages": [1]},  # the upstream could crash on it
    ]
    for body in bodies:
        response = client.post("/v1/chat/completions", json=body)
        assert response.status_code == 400, body
        assert response.json()["error"]["type"] == "invalid_request_error"
    stream = client.post("/v1/chat/completions", json={**chat("hi"), "stream": "yes"})
    assert stream.status_code == 400 and stream.json()["error"]["param"] == "stream"


def metric(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


def test_ttft_and_tps_are_recorded(client: httpx.Client) -> None:
    before = client.get("/metrics").text
    client.post("/v1/chat/completions", json=chat("hello")).raise_for_status()
    after = client.get("/metrics").text
    for name in (
        "inferline_time_to_first_token_seconds_count",
        "inferline_output_tokens_per_second_count",
    ):
        assert metric(after, name, engine="openai") == metric(before, name, engine="openai") + 1
    tokens = "inferline_tokens_total"
    added = metric(after, tokens, model=CHAT, direction="output") - metric(
        before, tokens, model=CHAT, direction="output"
    )
    assert added == len(REPLY)
    ttft = metric(after, "inferline_time_to_first_token_seconds_sum", engine="openai")
    assert 0 < ttft < 10


def test_keys_are_never_logged(gateway: Server, client: httpx.Client) -> None:
    client.post("/v1/chat/completions", json=chat("broken"))
    output = gateway.output()
    assert EMBED_KEY not in output and CHAT_KEY not in output


def test_missing_key_stops_the_server(
    server_factory: ServerFactory, upstream: FakeOpenAI, tmp_path: Path
) -> None:
    config = tmp_path / "models.toml"
    config.write_text(
        f'[models.embedding]\nengine = "openai"\nurl = "{upstream.url}"\n'
        'api_key_env = "INFERLINE_TEST_UNSET_KEY"\n'
    )
    with pytest.raises(RuntimeError, match="INFERLINE_TEST_UNSET_KEY, which is not set"):
        server_factory({"INFERLINE_MODELS_CONFIG": str(config)})
