"""The batcher's contract: batching, limits, deadlines, cancellation, failures."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest

from inferline.batching import Batcher, BatcherLimits, BatchReport
from inferline.errors import DeadlineExceeded, EngineError, InvalidInput, Overloaded, Unavailable
from inferline.grouping import grow
from tests.unit.fakes import CountingEngine, item

T = TypeVar("T")


def run(fn: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(fn())  # type: ignore[arg-type]


def make(engine: CountingEngine, **kw: float) -> Batcher:
    limits = BatcherLimits(**{"max_delay": 0.005, **kw})  # type: ignore[arg-type]
    batcher = Batcher(engine.infer, limits, name="test")
    batcher.start()
    return batcher


def test_concurrent_items_are_batched_and_each_gets_its_own_result() -> None:
    async def scenario() -> None:
        engine = CountingEngine()
        b = make(engine, max_batch_size=4, concurrency=1)
        results = await asyncio.gather(*(b.submit(item(i, i)) for i in range(1, 11)))
        assert [float(r[1]) for r in results] == [2.0 * i for i in range(1, 11)]
        assert all(len(batch) <= 4 for batch in engine.batches)
        assert len(engine.batches) < 10  # batched, not one call per item
        assert sorted(engine.seen()) == list(range(1, 11))
        await b.close()

    run(scenario)


def test_token_budget_limits_padded_tokens() -> None:
    async def scenario() -> None:
        engine = CountingEngine()
        b = make(engine, max_batch_size=64, max_batch_tokens=12, concurrency=1)
        await asyncio.gather(*(b.submit(item(*range(1, 5))) for _ in range(9)))  # 4 tokens each
        for batch in engine.batches:
            assert len(batch) * max(i.tokens for i in batch) <= 12
        await b.close()

    run(scenario)


def test_length_aware_grouping_keeps_similar_lengths_together() -> None:
    lengths = [2, 2, 3, 3, 40, 41, 42, 90]
    limits = BatcherLimits(max_batch_size=4, min_batch_size=1, max_padding_ratio=1.3)
    lo, hi = grow(lengths, 4, limits)
    assert lengths[lo : hi + 1] == [40, 41, 42]
    lo, hi = grow(lengths, 0, limits)
    assert lengths[lo : hi + 1] == [2, 2, 3, 3]


def test_oldest_item_is_always_in_the_next_batch() -> None:
    async def scenario() -> None:
        engine = CountingEngine()
        engine.gate = asyncio.Event()
        b = make(engine, max_batch_size=2, concurrency=1, min_batch_size=1, max_padding_ratio=1.0)
        first = asyncio.ensure_future(b.submit(item(1)))
        await asyncio.sleep(0.02)  # the first batch [1] is now running, held by the gate
        long_one = asyncio.ensure_future(b.submit(item(*range(2, 30))))
        shorts = [asyncio.ensure_future(b.submit(item(100 + i))) for i in range(5)]
        await asyncio.sleep(0.01)
        engine.gate.set()
        await asyncio.gather(first, long_one, *shorts)
        assert [int(i.ids[0]) for i in engine.batches[1]] == [2]  # oldest waiting first
        await b.close()

    run(scenario)


def test_deadline_passing_in_queue_fails_fast_and_never_runs() -> None:
    async def scenario() -> None:
        engine = CountingEngine()
        engine.gate = asyncio.Event()
        b = make(engine, max_batch_size=1, concurrency=1)
        blocker = asyncio.ensure_future(b.submit(item(1)))
        await asyncio.sleep(0.01)
        started = time.monotonic()
        with pytest.raises(DeadlineExceeded):
            await b.submit(item(2), deadline=time.monotonic() + 0.05)
        assert time.monotonic() - started < 5  # raised at the deadline, not after the blocker
        engine.gate.set()
        await blocker
        await asyncio.sleep(0.02)
        assert 2 not in engine.seen()
        await b.close()

    run(scenario)


def test_deadline_passing_in_a_running_batch_answers_at_the_deadline() -> None:
    async def scenario() -> None:
        engine = CountingEngine()
        engine.gate = asyncio.Event()
        b = make(engine, max_batch_size=8, concurrency=1, max_delay=0.02)
        soon = time.monotonic() + 0.1
        hurried = asyncio.ensure_future(b.submit(item(1), deadline=soon))
        patient = asyncio.ensure_future(b.submit(item(2), deadline=soon + 60))
        await asyncio.sleep(0.03)
        assert len(engine.batches) == 1 and len(engine.batches[0]) == 2  # both running
        # The batch tells a remote engine how long anybody waits: the latest deadline.
        assert engine.deadlines == [soon + 60]
        with pytest.raises(DeadlineExceeded, match="before the model answered"):
            await hurried  # while the batch is still held: not when it ends
        assert not patient.done()
        engine.gate.set()
        assert float((await patient)[1]) == 2.0
        await b.close()

    run(scenario)


def test_a_batch_failing_past_a_callers_deadline_reads_as_that_deadline() -> None:
    """A remote engine ends its call at the callers' deadline and fails the batch then: the
    caller must hear the same 504 as from its own timer, whichever comes first."""

    async def scenario() -> None:
        engine = CountingEngine()
        engine.gate = asyncio.Event()
        engine.fail_with = Unavailable("the upstream of model 'x' is unavailable")
        b = make(engine, max_batch_size=8, concurrency=1, max_delay=0.02)
        hurried = asyncio.ensure_future(b.submit(item(1), deadline=time.monotonic() + 0.05))
        patient = asyncio.ensure_future(b.submit(item(2)))
        await asyncio.sleep(0.03)
        assert len(engine.batches) == 1
        # The loop is held past the deadline, so that its timer cannot fire first.
        time.sleep(0.05)  # noqa: ASYNC251
        engine.gate.set()
        with pytest.raises(DeadlineExceeded, match="before the model answered"):
            await hurried
        with pytest.raises(Unavailable):
            await patient
        await b.close()

    run(scenario)


def test_a_batch_with_a_caller_without_deadline_has_none() -> None:
    async def scenario() -> None:
        engine = CountingEngine()
        b = make(engine, max_batch_size=8, concurrency=1, max_delay=0.02)
        await asyncio.gather(b.submit(item(1), deadline=time.monotonic() + 60), b.submit(item(2)))
        assert engine.deadlines == [None]
        await b.close()

    run(scenario)


def test_past_deadline_is_refused_at_admission() -> None:
    async def scenario() -> None:
        b = make(CountingEngine())
        with pytest.raises(DeadlineExceeded):
            await b.submit(item(1), deadline=time.monotonic() - 1)
        assert b.queue_depth == 0
        await b.close()

    run(scenario)


def test_cancelled_caller_item_is_dropped_before_the_engine() -> None:
    async def scenario() -> None:
        engine = CountingEngine()
        engine.gate = asyncio.Event()
        b = make(engine, max_batch_size=1, concurrency=1)
        blocker = asyncio.ensure_future(b.submit(item(1)))
        await asyncio.sleep(0.01)
        victim = asyncio.ensure_future(b.submit(item(2)))
        await asyncio.sleep(0.01)
        assert b.queue_depth == 1
        victim.cancel()
        await asyncio.sleep(0)
        assert b.queue_depth == 0 and b.queued_tokens == 0
        engine.gate.set()
        await blocker
        await asyncio.sleep(0.02)
        assert engine.seen() == [1]
        await b.close()

    run(scenario)


def test_cancel_while_running_does_not_break_the_batch() -> None:
    async def scenario() -> None:
        engine = CountingEngine()
        engine.gate = asyncio.Event()
        b = make(engine, max_batch_size=8, concurrency=1, max_delay=0.02)
        a = asyncio.ensure_future(b.submit(item(1)))
        c = asyncio.ensure_future(b.submit(item(2)))
        await asyncio.sleep(0.05)  # both are in the running batch
        a.cancel()
        engine.gate.set()
        assert float((await c)[1]) == 2.0
        assert a.cancelled()
        await b.close()

    run(scenario)


def test_bad_item_fails_alone() -> None:
    async def scenario() -> None:
        engine = CountingEngine()
        engine.poison = {13}
        b = make(engine, max_batch_size=8, concurrency=1, max_delay=0.02)
        good = [b.submit(item(i)) for i in (1, 2, 3)]
        bad = b.submit(item(13))
        results = await asyncio.gather(*good, bad, return_exceptions=True)
        assert [float(r[1]) for r in results[:3]] == [1.0, 2.0, 3.0]  # type: ignore[index]
        assert isinstance(results[3], EngineError)
        assert len(engine.batches) == 1  # they shared one batch
        with pytest.raises(InvalidInput):
            await b.submit(item())  # an empty item is refused before batching
        await b.close()

    run(scenario)


def test_full_queue_is_refused_with_retry_after() -> None:
    async def scenario() -> None:
        engine = CountingEngine()
        engine.gate = asyncio.Event()
        b = make(engine, max_batch_size=1, concurrency=1, max_queue_items=3)
        running = asyncio.ensure_future(b.submit(item(1)))
        await asyncio.sleep(0.01)
        queued = [asyncio.ensure_future(b.submit(item(i))) for i in (2, 3, 4)]
        await asyncio.sleep(0.01)
        with pytest.raises(Overloaded) as info:
            await b.submit(item(5))
        assert info.value.retry_after >= 1
        with pytest.raises(Overloaded):  # all-or-nothing admission for several items
            await b.submit_many([item(6)])
        engine.gate.set()
        await asyncio.gather(running, *queued)
        await b.close()

    run(scenario)


def test_a_request_larger_than_the_queue_is_422_not_429() -> None:
    """A 429 says "retry later"; a request that could never fit must not be told that."""

    async def scenario() -> None:
        b = make(CountingEngine(), max_queue_items=3, max_queue_tokens=100)
        with pytest.raises(InvalidInput, match="holds at most 3 texts") as info:
            await b.submit_many([item(i) for i in range(4)])
        assert info.value.status == 422
        with pytest.raises(InvalidInput, match="and 100 tokens"):
            await b.submit_many([item(*range(60)), item(*range(60))])
        assert len(await b.submit_many([item(1), item(2), item(3)])) == 3  # room: served
        await b.close()

    run(scenario)


def test_refusal_is_shared_while_its_retry_after_holds() -> None:
    async def scenario() -> None:
        engine = CountingEngine()
        engine.gate = asyncio.Event()
        b = make(engine, max_batch_size=1, concurrency=1, max_queue_items=2)
        assert b.refusal() is None  # room: nothing to refuse
        running = asyncio.ensure_future(b.submit(item(1)))
        await asyncio.sleep(0.01)
        queued = [asyncio.ensure_future(b.submit(item(i))) for i in (2, 3)]
        await asyncio.sleep(0.01)
        first = b.refusal()
        assert first is not None and b.refusal() is first  # built once, not per request
        assert str(first) == (
            "the test queue is full: at most 2 texts and 262144 tokens wait at once"
        )
        with pytest.raises(Overloaded) as info:  # check_room raises a fresh one, same words
            b.check_room()
        assert info.value is not first and str(info.value) == str(first)
        assert info.value.retry_after == first.retry_after
        b._rate = 0.1  # a slower drain: a longer Retry-After, so a new shared error
        slower = b.refusal()
        assert slower is not None and slower is not first and slower.retry_after == 20
        b.limits = BatcherLimits(max_batch_size=1, concurrency=1, max_queue_items=3)
        assert b.refusal() is None  # the new limit leaves room
        b.limits = BatcherLimits(max_batch_size=1, concurrency=1, max_queue_items=1)
        changed = b.refusal()
        assert changed is not None and "at most 1 text and" in str(changed)
        engine.gate.set()
        await asyncio.gather(running, *queued)
        assert b.refusal() is None
        await b.close()

    run(scenario)


def test_token_bound_on_queue() -> None:
    async def scenario() -> None:
        engine = CountingEngine()
        engine.gate = asyncio.Event()
        b = make(engine, max_batch_size=1, concurrency=1, max_queue_tokens=10)
        running = asyncio.ensure_future(b.submit(item(1)))
        await asyncio.sleep(0.01)
        waiting = asyncio.ensure_future(b.submit(item(*range(6))))  # 6 of the 10 tokens
        await asyncio.sleep(0.01)
        with pytest.raises(Overloaded):
            await b.submit(item(*range(5)))  # fits once the queue drains: 429
        with pytest.raises(InvalidInput):
            await b.submit(item(*range(11)))  # never fits: 422
        engine.gate.set()
        await asyncio.gather(running, waiting)
        await b.close()

    run(scenario)


def test_engine_exception_fails_the_whole_batch() -> None:
    async def scenario() -> None:
        engine = CountingEngine()
        engine.fail_with = RuntimeError("device lost")
        b = make(engine, max_batch_size=4, max_delay=0.02)
        results = await asyncio.gather(
            *(b.submit(item(i)) for i in range(3)), return_exceptions=True
        )
        assert all(isinstance(r, EngineError) for r in results)
        assert isinstance(results[0], BaseException)
        assert isinstance(results[0].__cause__, RuntimeError)
        engine.fail_with = None
        assert float((await b.submit(item(7)))[1]) == 7.0  # the batcher lives on
        await b.close()

    run(scenario)


def test_output_count_mismatch_is_an_engine_error() -> None:
    async def scenario() -> None:
        engine = CountingEngine()
        engine.drop_last = True
        b = make(engine, max_batch_size=4, max_delay=0.02)
        results = await asyncio.gather(
            *(b.submit(item(i)) for i in range(3)), return_exceptions=True
        )
        assert all(isinstance(r, EngineError) and "outputs for" in str(r) for r in results)
        await b.close()

    run(scenario)


def test_submit_many_cancels_the_rest_when_one_fails() -> None:
    async def scenario() -> None:
        engine = CountingEngine()
        engine.poison = {2}
        b = make(engine, max_batch_size=1, concurrency=1)
        with pytest.raises(EngineError):
            await b.submit_many([item(1), item(2), item(3), item(4)])
        await asyncio.sleep(0.02)
        assert b.queue_depth == 0
        await b.close()

    run(scenario)


def test_close_drains_queued_work_then_refuses() -> None:
    async def scenario() -> None:
        engine = CountingEngine()
        b = make(engine, max_batch_size=2, concurrency=1)
        pending = [asyncio.ensure_future(b.submit(item(i))) for i in range(1, 6)]
        await asyncio.sleep(0)
        await b.close(grace=5)
        assert [float(p.result()[1]) for p in pending] == [1.0, 2.0, 3.0, 4.0, 5.0]
        with pytest.raises(Unavailable):
            await b.submit(item(9))

    run(scenario)


def test_close_after_grace_fails_what_is_left() -> None:
    async def scenario() -> None:
        engine = CountingEngine()
        engine.gate = asyncio.Event()
        b = make(engine, max_batch_size=1, concurrency=1)
        running = asyncio.ensure_future(b.submit(item(1)))
        queued = asyncio.ensure_future(b.submit(item(2)))
        await asyncio.sleep(0.01)
        closing = asyncio.ensure_future(b.close(grace=0.05))
        await asyncio.sleep(0.1)
        with pytest.raises(Unavailable):
            await queued
        engine.gate.set()
        await closing
        assert float((await running)[1]) == 1.0

    run(scenario)


def test_batch_reports_describe_each_batch() -> None:
    async def scenario() -> None:
        engine = CountingEngine()
        reports: list[BatchReport] = []
        limits = BatcherLimits(max_batch_size=8, max_delay=0.02, min_batch_size=8)
        b = Batcher(engine.infer, limits, on_batch=reports.append)
        b.start()
        await asyncio.gather(b.submit(item(1, 2, 3)), b.submit(item(1)))
        assert len(reports) == 1
        assert reports[0].size == 2 and reports[0].tokens == 4 and reports[0].padded_tokens == 6
        assert len(reports[0].queue_waits) == 2 and not reports[0].failed
        await b.close()

    run(scenario)


def test_a_text_after_a_quiet_spell_is_not_held_for_company() -> None:
    """Waiting for a batch to fill pays only under traffic: a text that came after a gap
    longer than max_delay runs at once, while a text close behind another waits for more
    when every lane is busy."""

    async def scenario() -> None:
        engine = CountingEngine()
        engine.gate = asyncio.Event()  # the first batch holds the only lane
        b = make(engine, max_batch_size=8, max_delay=0.2, concurrency=2)
        first = asyncio.ensure_future(b.submit(item(1)))
        await asyncio.sleep(0.05)  # with the wait, the first would still be queued here
        assert len(engine.batches) == 1
        second = asyncio.ensure_future(b.submit(item(2)))  # 50 ms behind: it waits
        await asyncio.sleep(0.05)
        third = asyncio.ensure_future(b.submit(item(3)))
        await asyncio.sleep(0.2)
        engine.gate.set()
        await asyncio.gather(first, second, third)
        assert [[int(i.ids[0]) for i in batch] for batch in engine.batches] == [[1], [2, 3]]
        await b.close()

    run(scenario)


def test_a_text_is_not_held_for_company_while_a_lane_is_idle() -> None:
    """Two lanes: with one busy, a text close behind another runs at once on the other."""

    async def scenario() -> None:
        engine = CountingEngine()
        engine.gate = asyncio.Event()
        b = make(engine, max_batch_size=8, max_delay=0.2, concurrency=3)
        first = asyncio.ensure_future(b.submit(item(1)))
        await asyncio.sleep(0.01)
        second = asyncio.ensure_future(b.submit(item(2)))  # dense, but a lane is free
        await asyncio.sleep(0.05)
        assert [[int(i.ids[0]) for i in batch] for batch in engine.batches] == [[1], [2]]
        engine.gate.set()
        await asyncio.gather(first, second)
        await b.close()

    run(scenario)


def test_closing_twice_is_harmless() -> None:
    async def scenario() -> None:
        engine = CountingEngine()
        engine.gate = asyncio.Event()
        b = make(engine, concurrency=1)
        running = asyncio.ensure_future(b.submit(item(1)))
        await asyncio.sleep(0.01)
        await b.close(grace=0.01)  # the grace runs out with a batch still running
        await b.close(grace=0.01)  # raised CancelledError into a caller not cancelled
        engine.gate.set()
        await asyncio.gather(running, return_exceptions=True)

    run(scenario)
