"""Packed rows: several short texts share one row of the batch instead of padding.

The exported graphs take the attention mask as a packing (modelrepo/torchmodel.Encoder):
0 is padding and 1, 2, ... number the texts in a row; each text attends to itself only and
is pooled on its own. A 0/1 mask is the plain padded batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from inferline.types import Item

IntArray = npt.NDArray[np.int64]


def pack_rows(lengths: Sequence[int], width: int) -> list[list[int]]:
    """First-fit decreasing: the indices of ``lengths`` in each row, no row over ``width``
    (a text longer than ``width`` gets a row of its own)."""
    rows: list[list[int]] = []
    free: list[int] = []
    for index in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        length = lengths[index]
        for row, room in enumerate(free):
            if room >= length:
                rows[row].append(index)
                free[row] = room - length
                break
        else:
            rows.append([index])
            free.append(width - length)
    return rows


def layout(lengths: Sequence[int], min_width: int) -> tuple[list[list[int]], int]:
    """pack_batch's rows for texts this long, and their width: that of the fullest row."""
    rows = pack_rows(lengths, max(min_width, *lengths))
    return rows, max(sum(lengths[i] for i in row) for row in rows)


def packed_tokens(lengths: Sequence[int], min_width: int) -> int:
    """Tokens in the rows that pack_batch makes of texts this long, padding included."""
    rows, width = layout(lengths, min_width)
    return len(rows) * width


def pack_batch(
    items: Sequence[Item], min_width: int
) -> tuple[IntArray, IntArray, IntArray, IntArray]:
    """Pack ``items`` into rows at least ``min_width`` wide (or as wide as the longest).

    Returns (input_ids, segments, row, slot): item i's output is at [row[i], slot[i]] of the
    graph's packed output. Columns no row uses are cut off."""
    lengths = [item.tokens for item in items]
    rows, width = layout(lengths, min_width)
    ids = np.zeros((len(rows), width), dtype=np.int64)
    segments = np.zeros((len(rows), width), dtype=np.int64)
    row_of = np.empty(len(items), dtype=np.int64)
    slot_of = np.empty(len(items), dtype=np.int64)
    for r, row in enumerate(rows):
        start = 0
        for k, index in enumerate(row):
            end = start + lengths[index]
            ids[r, start:end] = items[index].ids
            segments[r, start:end] = k + 1
            row_of[index], slot_of[index] = r, k
            start = end
    return ids, segments, row_of, slot_of
