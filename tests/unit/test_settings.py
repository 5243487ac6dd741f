"""Settings refuse what cannot work, at start-up, without echoing values that may be secret."""

from __future__ import annotations

import pytest

from inferline.config import Settings


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
