"""The engine layer without I/O: the models config, key handling, retries and backoff, the
circuit breaker, and the stream meter's token counting."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from inferline.engines import sse
from inferline.engines.config import OipSpec, OnnxSpec, OpenAISpec, display, load
from inferline.engines.oip import OipEngine
from inferline.engines.openai import OpenAIChat
from inferline.engines.remote import Breaker, Retry, backoff, retrying
from inferline.engines.sse import StreamMeter
from inferline.errors import Overloaded, Unavailable
from inferline.telemetry.metrics import Metrics

TOML = """
[models.sentiment]
engine = "onnx"

[models.embedding]
engine = "oip"
url = "triton:8001"
protocol = "grpc"
remote_model = "minilm"
remote_version = "2"

[models."llama-3"]
engine = "openai"
url = "http://vllm:8000/v1"
api_key_env = "INFERLINE_TEST_KEY"
"""

YAML = """
models:
  embedding:
    engine: openai
    url: https://api.openai.com/v1
    remote_model: text-embedding-3-small
    output_dim: 1536
    api_key_file: {key}
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_toml_picks_an_engine_per_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFERLINE_TEST_KEY", "sk-test")
    config = load(write(tmp_path, "models.toml", TOML))
    assert isinstance(config.spec("sentiment"), OnnxSpec)
    embedding = config.spec("embedding")
    assert isinstance(embedding, OipSpec) and embedding.protocol == "grpc"
    assert embedding.remote_model == "minilm" and embedding.remote_version == "2"
    assert list(config.chat_models()) == ["llama-3"]
    assert isinstance(load(None).spec("embedding"), OnnxSpec)  # no file: all local


def test_yaml_and_a_key_file(tmp_path: Path) -> None:
    key = write(tmp_path, "key", "sk-from-file\n")
    config = load(write(tmp_path, "models.yaml", YAML.format(key=key)))
    spec = config.spec("embedding")
    assert isinstance(spec, OpenAISpec) and spec.output_dim == 1536
    secret = spec.api_key()
    assert secret is not None and secret.get_secret_value() == "sk-from-file"
    assert "sk-from-file" not in repr(secret) + repr(spec)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[models.embedding]\nengine = "oip"\nurll = "x"\n', "urll"),
        ('[models.embedding]\nengine = "grpc"\n', "engine"),
        ('[models.sentiment]\nengine = "openai"\nurl = "http://x/v1"\n', "OpenAI has no head"),
        ('[models.chat]\nengine = "oip"\nurl = "http://x"\n', "needs engine = 'openai'"),
        (
            '[models.chat]\nengine = "openai"\nurl = "http://x"\napi_key_env = "NOPE_NOT_SET"\n',
            "models.chat: api_key_env names NOPE_NOT_SET, which is not set",
        ),
        (
            '[models.chat]\nengine = "openai"\nurl = "http://x"\napi_key_file = "/nope-key"\n',
            "models.chat: cannot read api_key_file /nope-key",
        ),
        ("[models.embedding\n", "does not parse"),
        (
            '[models.embedding]\nengine = "oip"\nurl = "https://x"\ntls_ca_file = "/nope.pem"\n',
            "models.embedding: cannot read tls_ca_file /nope.pem",
        ),
        (
            '[models.embedding]\nengine = "oip"\nurl = "https://x"\n'
            'tls_cert_file = "/etc/os-release"\ntls_key_file = "/etc/os-release"\n',
            "models.embedding: cannot use the TLS files of https://x",  # not a certificate
        ),
    ],
)
def test_mistakes_are_named(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load(write(tmp_path, "models.toml", text))


def remote(engine: str, url: str, extra: str = "") -> str:
    return f'[models.embedding]\nengine = "{engine}"\nurl = "{url}"\n{extra}\n'


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (remote("oip", "backend:8000"), r"url: OIP over HTTP .*needs an http:// or https://"),
        (remote("oip", "ftp://backend:8000"), "url: OIP over HTTP"),
        (remote("oip", "grpcs://backend:443"), "url: OIP over HTTP"),
        (remote("oip", "http://127.0.0.1:99999"), "url: the URL has no valid host and port"),
        (remote("oip", "http://backend:8000 "), "url: the URL has spaces or control characters"),
        (remote("oip", "http://:8000"), "url: the URL has no host"),
        (remote("oip", "http://backend:8000?x=1"), "url: the URL has a query"),
        (remote("openai", "127.0.0.1:18100/v1"), "url: an OpenAI engine needs an http://"),
        (remote("openai", "ftp://vllm/v1"), "url: an OpenAI engine needs an http://"),
        (remote("oip", "http://backend:8001", 'protocol = "grpc"'), "url: OIP over gRPC takes"),
        (remote("oip", "backend:8001/v2", 'protocol = "grpc"'), "url: the URL has a query, a"),
        (remote("oip", "grpc://backend:0", 'protocol = "grpc"'), "url: the URL has port 0"),
        (
            remote("oip", "http://b", 'headers = {"x-a" = "1\\r\\nx-b: 2"}'),
            "headers: the value of x-a has a line",
        ),
        (
            remote("oip", "http://b", 'headers = {"x-a" = "\u4e2d"}'),
            "headers: the value of x-a is not Latin",
        ),
        (remote("oip", "http://b", 'headers = {"bad name" = "1"}'), "headers: a name that is not"),
        (
            remote("oip", "b:8001", 'protocol = "grpc"\nheaders = {"x-a" = "caf\u00e9"}'),
            "headers: the value of x-a is not printable ASCII",
        ),
        # httpx sends ASCII alone: the engine failed to start, and the model to load
        (
            remote("openai", "http://b/v1", 'headers = {"x-a" = "caf\u00e9"}'),
            "headers: the value of x-a is not ASCII",
        ),
        (
            remote("oip", "http://b", 'http2 = true\nheaders = {"x-a" = "caf\u00e9"}'),
            "headers: the value of x-a is not ASCII",
        ),
        # h11 refuses a space at an end, and its error quoted the value (a key) in the log
        (
            remote("openai", "http://b/v1", 'headers = {"x-api-key" = "s3cret "}'),
            "headers: the value of x-api-key is not ASCII or has spaces at an end",
        ),
    ],
)
def test_urls_and_headers_that_cannot_work_stop_the_start(
    tmp_path: Path, text: str, message: str
) -> None:
    """Found at load, before the server binds: else the model fails to load, or its upstream
    stays down forever, with the server up."""
    with pytest.raises(ValueError, match=f"is invalid: models.embedding.{message}"):
        load(write(tmp_path, "models.toml", text))


def test_a_key_no_header_can_carry_stops_the_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INFERLINE_TEST_KEY", "s3cr\u00e9t")
    text = remote("openai", "http://b/v1", 'api_key_env = "INFERLINE_TEST_KEY"')
    with pytest.raises(ValueError, match="the key has characters a header cannot") as refused:
        load(write(tmp_path, "models.toml", text))
    assert "s3cr" not in str(refused.value)


def test_a_scheme_in_upper_case_still_means_tls(tmp_path: Path) -> None:
    """The check read schemes in any case, the transports ``https:`` alone: ``HTTPS://``
    went in clear text, ``GRPCS://`` never resolved."""
    oip = load(write(tmp_path, "m.toml", remote("oip", "HTTPS://b:8443"))).spec("embedding")
    grpc = remote("oip", "GRPCS://b:443", 'protocol = "grpc"')
    assert isinstance(oip, OipSpec) and oip.url == "https://b:8443"
    assert load(write(tmp_path, "m.toml", grpc)).spec("embedding").url == "grpcs://b:443"  # type: ignore[union-attr]


def test_no_secret_is_echoed_by_the_url_or_header_checks(tmp_path: Path) -> None:
    for text in (
        remote("oip", "http://user:s3cret@backend:99999"),
        remote("oip", "http://b", 'headers = {authorization = "Bearer s3cret\\n"}'),
        remote("oip", "http://b", 'headers = {"authorization: Bearer s3cret" = "1"}'),
    ):
        with pytest.raises(ValueError) as refused:
            load(write(tmp_path, "models.toml", text))
        assert "s3cret" not in str(refused.value)


@pytest.mark.parametrize(
    "text",
    [
        remote("oip", "http://backend:8000"),
        remote("oip", "https://user:pw@10.0.0.1/prefix/", 'headers = {Host = "m.example.com"}'),
        remote("oip", "backend:8001", 'protocol = "grpc"\nheaders = {"x-route" = "a b"}'),
        remote("oip", "grpc://backend:8001", 'protocol = "grpc"'),
        remote("oip", "grpcs://backend:443", 'protocol = "grpc"'),
        remote("oip", "[::1]:8001", 'protocol = "grpc"'),
        remote("oip", "dns:///backend:8001", 'protocol = "grpc"'),
        remote("oip", "unix:/run/triton.sock", 'protocol = "grpc"'),
        remote("oip", "http://b:8000", 'headers = {"x-a" = "caf\u00e9\tok"}'),  # http1.py
        remote("openai", "http://vllm:8000/v1", 'headers = {"x-a" = "tab\tok"}'),
        remote("openai", "https://api.openai.com/v1"),
    ],
)
def test_the_documented_url_forms_load(tmp_path: Path, text: str) -> None:
    spec = load(write(tmp_path, "models.toml", text)).spec("embedding")
    assert isinstance(spec, OipSpec | OpenAISpec) and spec.mistake() is None


def test_keys_stay_out_of_reprs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFERLINE_TEST_KEY", "sk-very-secret")
    spec = OpenAISpec(
        engine="openai", url="http://user:pw@up:8000/v1", api_key_env="INFERLINE_TEST_KEY"
    )
    chat = OpenAIChat("chat", spec, Metrics(gpu=False))
    oip = OipEngine(
        "embedding",
        OipSpec(engine="oip", url="http://up:8000", api_key_env="INFERLINE_TEST_KEY"),
        output_dim=384,
        max_tokens=256,
    )
    for text in (repr(chat), repr(oip), repr(spec), str(oip.info)):
        assert "sk-very-secret" not in text and "pw" not in text
    assert display("http://user:pw@up:8000/v1") == "http://up:8000/v1"
    assert display("backend:8001") == "backend:8001"


def test_backoff_grows_with_jitter_and_a_cap() -> None:
    spec = OipSpec(engine="oip", url="x", backoff_s=0.1, max_backoff_s=1.0)
    for tries, cap in ((1, 0.1), (2, 0.2), (3, 0.4), (10, 1.0)):
        delays = [backoff(spec, tries) for _ in range(50)]
        assert all(cap / 2 <= d <= cap for d in delays)
        assert len(set(delays)) > 1


def test_retrying_stops_at_the_limit_and_the_deadline() -> None:
    spec = OipSpec(engine="oip", url="x", max_retries=2, backoff_s=0.001)
    calls: list[float] = []

    async def unavailable(deadline: float) -> None:
        calls.append(deadline)
        raise Retry(Unavailable("down"))

    async def far_retry_after(deadline: float) -> None:
        calls.append(deadline)
        raise Retry(Overloaded("busy", retry_after=60), retry_after=60)

    with pytest.raises(Unavailable):
        asyncio.run(retrying(unavailable, spec, time.monotonic() + 5))
    assert len(calls) == 3
    calls.clear()
    started = time.monotonic()
    with pytest.raises(Overloaded):
        asyncio.run(retrying(far_retry_after, spec, time.monotonic() + 5))
    assert len(calls) == 1 and time.monotonic() - started < 1


def test_breaker_opens_on_failures_and_closes_on_success() -> None:
    breaker = Breaker("embedding", "http://up", threshold=2)
    with pytest.raises(Unavailable):
        breaker.check()  # open until the first health check passes
    breaker.success()
    breaker.check()
    breaker.failure("one")
    breaker.check()  # one failure is not enough
    breaker.failure("two")
    with pytest.raises(Unavailable, match="upstream of model 'embedding'"):
        breaker.check()
    breaker.success()
    breaker.check()


def test_a_passing_health_check_closes_the_breaker_but_keeps_the_count() -> None:
    """An upstream whose inference hangs can still answer its health checks: those must not
    wipe the count of failed batches between them, or the breaker would never open."""
    breaker = Breaker("embedding", "http://up", threshold=2)
    breaker.healthy()  # the first health check closes it
    breaker.check()
    breaker.failure("timed out")
    breaker.healthy()
    breaker.failure("timed out")
    with pytest.raises(Unavailable):
        breaker.check()
    breaker.healthy()  # and it closes again when the upstream looks up
    breaker.check()
    breaker.failure("timed out")
    breaker.check()  # counting from zero again


def value(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def test_meter_counts_tokens_across_chunk_boundaries() -> None:
    metrics = Metrics(gpu=False)
    meter = StreamMeter("chat", time.monotonic(), metrics, stream=True)
    events = b"".join(
        b'data: {"choices": [{"delta": {"content": "w%d"}}]}\r\n\r\n' % i for i in range(5)
    )
    events += b'data: {"choices": [{"delta": {}}]}\n\ndata: [DONE]\n\n'
    for i in range(0, len(events), 7):  # split anywhere, even inside "\r\n\r\n"
        meter.feed(events[i : i + 7])
    meter.finish()
    meter.finish()  # once only
    assert value(metrics, "inferline_tokens_total", model="chat", direction="output") == 5
    assert value(metrics, "inferline_time_to_first_token_seconds_count", engine="openai") == 1
    assert value(metrics, "inferline_output_tokens_per_second_count", engine="openai") == 1


def test_meter_skips_an_event_too_large_to_read_and_counts_the_rest() -> None:
    metrics = Metrics(gpu=False)
    meter = StreamMeter("chat", time.monotonic(), metrics, stream=True)
    huge = b'data: {"choices": [{"delta": {"content": "' + b"x" * (sse.MAX_EVENT * 2) + b'"}}]}'
    for i in range(0, len(huge), 65536):
        meter.feed(huge[i : i + 65536])
    assert len(meter._buffer) <= sse.MAX_EVENT + 65536  # not held whole
    meter.feed(b"\n\n" + b'data: {"choices": [{"delta": {"content": "a"}}]}\n\n' * 1000)
    meter.finish()
    assert value(metrics, "inferline_tokens_total", model="chat", direction="output") == 1000


def test_a_relay_sends_whole_events_and_holds_the_rest() -> None:
    held = bytearray()
    assert sse.complete(held, b"data: 1\n\ndata: 2\r\n\r\ndata: ") == b"data: 1\n\ndata: 2\r\n\r\n"
    assert sse.complete(held, b"3\n") == b""
    assert sse.complete(held, b"\ndata: 4") == b"data: 3\n\n"
    assert held == b"data: 4"
    big = b"y" * (sse.MAX_EVENT + 1)
    assert sse.complete(held, big) == b"data: 4" + big  # too large to hold: let through
    assert held == b""


def test_meter_prefers_the_upstreams_usage() -> None:
    metrics = Metrics(gpu=False)
    meter = StreamMeter("chat", time.monotonic(), metrics, stream=True)
    meter.feed(b'data: {"choices": [{"text": "a"}]}\n\n')
    meter.feed(b'data: {"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 12}}\n\n')
    meter.finish()
    assert value(metrics, "inferline_tokens_total", model="chat", direction="output") == 12
    assert value(metrics, "inferline_tokens_total", model="chat", direction="input") == 7
    whole = StreamMeter("chat", time.monotonic(), metrics, stream=False)
    whole.feed(b'{"choices": [], "usage": {"completion_tokens": 3}}')
    whole.finish()
    assert value(metrics, "inferline_tokens_total", model="chat", direction="output") == 15
