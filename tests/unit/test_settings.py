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
