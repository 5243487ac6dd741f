"""Inference threads run below the event loop's priority (Linux keeps niceness per thread)."""

from __future__ import annotations

import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from inferline.config import Settings
from inferline.engines.onnx import lower_priority

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="per-thread niceness is Linux's")


def niceness() -> int:
    return os.getpriority(os.PRIO_PROCESS, 0)


def test_a_lane_thread_is_reniced_and_the_caller_is_not() -> None:
    before = niceness()
    with ThreadPoolExecutor(2, initializer=lower_priority, initargs=(before + 5,)) as pool:
        seen = set(pool.map(lambda _: niceness(), range(8)))
    assert seen == {before + 5}
    assert niceness() == before


def test_niceness_is_never_lowered() -> None:
    result: list[int] = []

    def run() -> None:
        os.setpriority(os.PRIO_PROCESS, 0, niceness() + 7)
        start = niceness()
        lower_priority(start - 3)  # asking for more priority than it has: left alone
        result.extend([start, niceness()])

    t = threading.Thread(target=run)
    t.start()
    t.join()
    assert result[0] == result[1]


def test_zero_leaves_the_thread_alone() -> None:
    before = niceness()
    with ThreadPoolExecutor(1, initializer=lower_priority, initargs=(0,)) as pool:
        assert pool.submit(niceness).result() == before


def test_the_default_puts_lanes_at_the_lowest_priority() -> None:
    assert Settings().lane_nice == 19
