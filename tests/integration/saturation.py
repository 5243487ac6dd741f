"""A queue held full, for testing refusals on every protocol.

One lane runs one long batch of QUEUE texts, one more batch waits for it in the engine, and
QUEUE more texts wait in the queue: the queue stays full for the length of the first batch
(about two seconds here). A request that would fit an empty queue is refused with 429 then.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from tests.conftest import Server

QUEUE = 64
LOADS = 3  # batches of QUEUE texts: one in the lane, one waiting for it, one queued
LONG = " ".join(["the battery died after a week and the screen flickered"] * 40)
SETTINGS = {
    "INFERLINE_LANES": "1",
    "INFERLINE_MAX_BATCH_SIZE": str(QUEUE),
    "INFERLINE_MAX_BATCH_TOKENS": str(QUEUE * 256),
    "INFERLINE_PACK_ROWS": str(QUEUE),  # one long text a row: a load is one batch
    "INFERLINE_MAX_QUEUE_ITEMS": str(QUEUE),
    "INFERLINE_REQUEST_TIMEOUT_S": "120",
}


def depth(server: Server, model: str) -> float:
    text = httpx.get(server.url + "/metrics").text
    found = re.search(rf'^inferline_queue_depth{{model="{model}"}} (\S+)$', text, re.M)
    assert found, "no queue depth gauge"
    return float(found.group(1))


@contextmanager
def saturated(server: Server, model: str, headers: dict[str, str] | None = None) -> Iterator[None]:
    """``model``'s queue is full inside the block (see the module's docstring). The three
    loads end with 200 after it."""
    path = "/predict" if model == "sentiment" else "/embed"
    statuses: list[int] = []

    def post() -> None:
        body = {"texts": [LONG] * QUEUE}
        while True:  # the last is refused until the first is in the lane
            answer = httpx.post(server.url + path, json=body, headers=headers, timeout=120)
            status = answer.status_code
            if status != 429:
                statuses.append(status)
                return
            time.sleep(0.01)

    loads = [threading.Thread(target=post) for _ in range(LOADS)]
    for load in loads:
        load.start()
    deadline = time.monotonic() + 30
    while not (depth(server, model) == QUEUE and stays_full(server, model)):
        assert time.monotonic() < deadline, "the queue never filled"
        time.sleep(0.002)
    try:
        yield
        assert depth(server, model) == QUEUE, "the queue drained too soon: lengthen the batch"
    finally:
        for load in loads:
            load.join()
    assert statuses == [200] * LOADS


def stays_full(server: Server, model: str) -> bool:
    """Full for a while: not a load that the batcher is about to take (within 2 ms)."""
    time.sleep(0.05)
    return depth(server, model) == QUEUE
