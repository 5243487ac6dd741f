"""Packed rows: the engine's layout (engines/packing.py) and the batcher's choice of texts
for them (grouping.fill_rows)."""

from __future__ import annotations

import asyncio

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from inferline.batching import Batcher, BatcherLimits
from inferline.engines.packing import pack_batch, pack_rows, packed_tokens
from inferline.grouping import fill_rows
from inferline.types import Item
from tests.unit.fakes import CountingEngine


def text(length: int, first: int = 1) -> Item:
    return Item(np.arange(first, first + length, dtype=np.int64))


def test_short_texts_share_rows_first_fit_decreasing() -> None:
    assert pack_rows([10, 30, 20, 15, 40], 48) == [[4], [1, 3], [2, 0]]


def test_a_text_longer_than_the_row_gets_a_row_of_its_own() -> None:
    assert pack_rows([100, 5], 48) == [[0], [1]]


@given(st.lists(st.integers(1, 256), min_size=1, max_size=40), st.integers(1, 128))
def test_every_text_is_placed_once_and_no_shared_row_overflows(
    lengths: list[int], width: int
) -> None:
    rows = pack_rows(lengths, width)
    assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
    for row in rows:
        assert len(row) == 1 or sum(lengths[i] for i in row) <= width


def test_the_batch_layout_numbers_texts_per_row_and_maps_each_back() -> None:
    items = [text(3, 10), text(5, 20), text(2, 30)]
    ids, segments, row, slot = pack_batch(items, 8)
    assert ids.shape == segments.shape == (2, 8)  # 5 + 3 fill one row; 2 starts another
    for index, item in enumerate(items):
        r, k = row[index], slot[index]
        placed = segments[r] == k + 1
        assert list(ids[r][placed]) == list(item.ids)
    assert set(np.unique(segments)) <= {0, 1, 2, 3}


def test_columns_no_row_uses_are_cut_off() -> None:
    ids, segments, _, _ = pack_batch([text(4), text(3)], 48)
    assert ids.shape == (1, 7)
    assert list(segments[0]) == [1, 1, 1, 1, 2, 2, 2]


def test_padding_is_counted_from_the_layout() -> None:
    assert packed_tokens([10, 30, 20, 15, 40], 48) == 3 * 45
    assert packed_tokens([20, 20], 0) == 2 * 20  # no packing width: one row each


def limits(**kw: int) -> BatcherLimits:
    return BatcherLimits(**{"pack_width": 48, "pack_rows": 2, **kw})


def test_each_row_starts_with_the_oldest_text_left_and_is_filled_best_fit() -> None:
    lengths = [30, 40, 5, 10, 45, 20]  # oldest first
    chosen = fill_rows(lengths, limits())
    # Row 1: 30 (the oldest), then 10 and 5 fill its gap of 18. Row 2: 40 (the oldest
    # left), with a gap of 8 that nothing left fits. 45 and 20 wait.
    assert chosen == [0, 3, 2, 1]


def test_of_texts_equally_long_the_oldest_fills_a_gap() -> None:
    assert fill_rows([10, 5, 5, 5], limits(pack_width=20, pack_rows=1)) == [0, 1, 2]


def test_a_long_oldest_text_sets_the_row_width() -> None:
    lengths = [90, 20, 10]
    assert fill_rows(lengths, limits(pack_rows=1)) == [0]  # its row is full
    assert fill_rows(lengths, limits(pack_rows=2)) == [0, 1, 2]  # a second row of 90


def test_a_text_longer_than_the_row_waits_to_be_the_oldest() -> None:
    assert fill_rows([10, 60, 30], limits()) == [0, 2]


@given(
    st.lists(st.integers(1, 256), min_size=1, max_size=60),
    st.integers(1, 8),
    st.integers(1, 24),
)
def test_fill_rows_keeps_to_its_limits(lengths: list[int], rows: int, most: int) -> None:
    lim = limits(pack_rows=rows, max_batch_size=most)
    chosen = fill_rows(lengths, lim)
    assert chosen[0] == 0  # the oldest text is always taken
    assert len(set(chosen)) == len(chosen) <= most
    width = max(48, lengths[0])
    assert all(lengths[i] <= width for i in chosen)
    assert len(pack_rows([lengths[i] for i in chosen], width)) <= rows


def test_a_text_that_fits_no_gap_still_goes_while_it_is_among_the_oldest() -> None:
    """Rows begun with the longest texts would leave the 30 waiting for as long as 40s
    and 8s keep coming, each pair filling a row exactly."""
    lengths = [4, 30, 40, 8, 40, 8, 40, 8]
    assert 1 in fill_rows(lengths, limits(pack_rows=3))


def test_the_batcher_packs_texts_that_padding_would_keep_apart() -> None:
    async def scenario() -> None:
        engine = CountingEngine()
        engine.gate = asyncio.Event()
        batcher = Batcher(engine.infer, limits(concurrency=1, pack_rows=4), name="test")
        batcher.start()
        first = asyncio.ensure_future(batcher.submit(text(2)))
        await asyncio.sleep(0.01)  # the first batch holds the one lane
        rest = [asyncio.ensure_future(batcher.submit(text(n))) for n in (4, 40, 6, 36, 8)]
        await asyncio.sleep(0.01)
        engine.gate.set()
        await asyncio.gather(first, *rest)
        await batcher.close()
        # Padded, 4 and 40 tokens in one batch would be 10x padding; packed, one call.
        assert [sorted(i.tokens for i in b) for b in engine.batches] == [[2], [4, 6, 8, 36, 40]]

    asyncio.run(scenario())
