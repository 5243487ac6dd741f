"""Property tests of the batcher under random arrivals, cancellations and deadlines.

Whatever the schedule: every submitted future resolves exactly once, no text starts in the
engine after its deadline, results belong to their own inputs, and nothing is left behind.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inferline.batching import Batcher, BatcherLimits
from inferline.errors import DeadlineExceeded, EngineError, Overloaded
from inferline.types import FloatArray, Item


@dataclass(frozen=True)
class Arrival:
    gap_ms: int  # wait before submitting
    tokens: int
    deadline_ms: int | None  # relative to submission
    cancel_ms: int | None  # the caller gives up after this long


arrivals = st.lists(
    st.builds(
        Arrival,
        gap_ms=st.integers(0, 3),
        tokens=st.integers(1, 40),
        deadline_ms=st.one_of(st.none(), st.integers(0, 30)),
        cancel_ms=st.one_of(st.none(), st.integers(0, 30)),
    ),
    min_size=1,
    max_size=40,
)


class RecordingEngine:
    def __init__(self, seed: int, fail_every: int) -> None:
        self.rng = random.Random(seed)
        self.started: dict[int, float] = {}  # item id -> when the engine took it
        self.calls = 0
        self.fail_every = fail_every

    async def infer(self, items: Sequence[Item]) -> Sequence[FloatArray | BaseException]:
        now = time.monotonic()
        for item in items:
            assert int(item.ids[0]) not in self.started, "an item ran twice"
            self.started[int(item.ids[0])] = now
        self.calls += 1
        await asyncio.sleep(self.rng.uniform(0, 0.004))
        if self.fail_every and self.calls % self.fail_every == 0:
            raise RuntimeError("engine failure")
        return [np.array([float(i.ids[0])], dtype=np.float32) for i in items]


@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    schedule=arrivals,
    limits=st.builds(
        BatcherLimits,
        max_batch_size=st.integers(1, 8),
        max_batch_tokens=st.just(160),
        max_delay=st.just(0.002),
        max_queue_items=st.integers(2, 64),
        concurrency=st.integers(1, 3),
    ),
    fail_every=st.sampled_from([0, 0, 3]),
    seed=st.integers(0, 1000),
)
def test_every_future_resolves_once_and_none_runs_late(
    schedule: list[Arrival], limits: BatcherLimits, fail_every: int, seed: int
) -> None:
    engine = RecordingEngine(seed, fail_every)
    deadlines, outcomes, depth = asyncio.run(scenario(schedule, limits, engine))
    assert set(outcomes) == set(range(1, len(schedule) + 1)), "a caller never heard back"
    for key, started in engine.started.items():
        if key in deadlines:
            assert started <= deadlines[key], "an item ran after its deadline"
    for key, outcome in outcomes.items():
        if outcome == "ok":
            assert key in engine.started
        if outcome == "refused":
            assert key not in engine.started, "a refused item reached the engine"
        # An expired item may have started, before its deadline (checked above): its caller
        # hears at the deadline even while its batch runs.
    assert depth == (0, 0), "the queue kept something"


async def scenario(
    schedule: list[Arrival], limits: BatcherLimits, engine: RecordingEngine
) -> tuple[dict[int, float], dict[int, str], tuple[int, int]]:
    batcher = Batcher(engine.infer, limits)
    batcher.start()
    deadlines: dict[int, float] = {}
    outcomes: dict[int, str] = {}

    async def caller(key: int, arrival: Arrival) -> None:
        ids = np.full(arrival.tokens, key, dtype=np.int64)
        deadline = None
        if arrival.deadline_ms is not None:
            deadline = time.monotonic() + arrival.deadline_ms / 1000
            deadlines[key] = deadline
        task = asyncio.ensure_future(batcher.submit(Item(ids), deadline))
        if arrival.cancel_ms is not None:
            asyncio.get_running_loop().call_later(arrival.cancel_ms / 1000, task.cancel)
        try:
            row = await task
        except asyncio.CancelledError:
            outcome = "cancelled"
        except DeadlineExceeded:
            outcome = "expired"
        except Overloaded:
            outcome = "refused"
        except EngineError:
            outcome = "failed"
        else:
            assert float(row[0]) == float(key), "a result went to the wrong caller"
            outcome = "ok"
        assert key not in outcomes, "a future resolved twice"
        outcomes[key] = outcome

    callers = []
    for key, arrival in enumerate(schedule, start=1):
        await asyncio.sleep(arrival.gap_ms / 1000)
        callers.append(asyncio.ensure_future(caller(key, arrival)))
    await asyncio.wait_for(asyncio.gather(*callers), timeout=10)
    await batcher.close(grace=5)
    return deadlines, outcomes, (batcher.queue_depth, batcher.queued_tokens)
