"""Settings refuse what cannot work, at start-up, without echoing values that may be secret."""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from inferline.config import Settings, describe


def test_a_bad_redis_url_is_refused_without_echoing_it() -> None:
    with pytest.raises(ValueError, match="not a Redis URL") as refused:
        Settings(redis_url="redis://:s3cret-pw@host:notaport/0")
    assert "s3cret-pw" not in str(refused.value)
    with pytest.raises(ValueError, match="not a Redis URL"):
        Settings(redis_url="localhost:6379")
    assert Settings(redis_url="rediss://:pw@host:6380/1").redis_url


def test_only_the_producer_retries_redis_commands() -> None:
    """A command that fails on a connection Redis closed is sent again on a fresh one by the
    producer, whose commands are safe twice; never on a timeout (it may have run), and
    never a pipeline of the worker's, whose writes are not."""
    from redis.exceptions import ConnectionError as RedisConnectionError

    from inferline.queue.keys import connect

    settings = Settings(redis_url="redis://127.0.0.1:1/0")
    producer = connect(settings, retry=True)
    retry = producer.get_retry()
    assert retry is not None and retry.get_retries() == 1
    assert retry._supported_errors == (RedisConnectionError,)  # not TimeoutError
    assert producer.connection_pool.connection_kwargs["retry_on_error"] == (RedisConnectionError,)
    # The worker's pipelines (its MULTI of XACK, result and dead letter) are never re-sent.
    worker = connect(settings, block_ms=1000)
    assert not worker.connection_pool.connection_kwargs.get("retry_on_error")


def test_log_levels_are_read_in_any_case() -> None:
    assert Settings(log_level="WARNING").log_level == "warning"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        # both reached int() in the server's set-up: a traceback, exit 1
        ({"shutdown_grace_s": "inf"}, "shutdown_grace_s: Input should be a finite number"),
        ({"keep_alive_s": "Infinity"}, "keep_alive_s: Input should be a finite number"),
        ({"queue_reclaim_idle_s": "inf"}, "queue_reclaim_idle_s: Input should be a finite"),
        # no key at all: the API was served without authentication, silently
        ({"api_keys": ","}, "api_keys: Value error, holds no key"),
        # uvicorn found the clash only after gRPC had bound, as a taken port
        ({"port": "9000", "grpc_port": "9000"}, "port and grpc_port are both 9000"),
    ],
)
def test_settings_that_cannot_work_are_refused(
    values: dict[str, str], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in values.items():
        monkeypatch.setenv(f"INFERLINE_{name.upper()}", value)
    with pytest.raises(ValidationError) as refused:
        Settings()
    assert describe(refused.value).startswith(message), describe(refused.value)


def test_an_empty_path_setting_is_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    """``value: ""`` in a chart was the folder ``.``: "Is a directory" at start."""
    for name in ("TLS_CERT_FILE", "TLS_KEY_FILE", "MODELS_CONFIG", "API_KEYS_FILE"):
        monkeypatch.setenv(f"INFERLINE_{name}", "")
    settings = Settings()
    assert settings.tls_cert_file is settings.models_config is settings.api_keys_file is None
    assert Settings(port=0, grpc_port=0).port == 0  # two free ports, picked apart
    assert Settings(max_batch_size=1).min_batch_size == 2  # no batching: not a clash
    assert Settings(max_padding_ratio="inf").max_padding_ratio == math.inf  # no padding rule
