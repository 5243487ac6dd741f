"""Which waiting texts make the next batch: the oldest text and its nearest neighbours by
length (padded batches, ``grow``), or rows of texts packed side by side (``fill_rows``).
The Batcher (batching.py) calls these on the texts in its window; they only choose."""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from inferline.batching import BatcherLimits


def grow(lengths: Sequence[int], start: int, limits: BatcherLimits) -> tuple[int, int]:
    """Grow a batch around ``lengths[start]`` (``lengths`` sorted) to its nearest neighbours.

    Each step adds the neighbour that adds the least padding. Growth stops at the size or
    token limit, or, past ``min_batch_size``, when padding would exceed ``max_padding_ratio``
    of the real tokens: a padded token costs as much as a real one.
    """
    lo = hi = start
    longest = real = lengths[start]
    while hi - lo + 1 < limits.max_batch_size:
        n = hi - lo + 1
        best: tuple[int, int] | None = None  # (waste, side)
        if hi + 1 < len(lengths):
            best = (n * (lengths[hi + 1] - longest), +1)
        if lo > 0 and (best is None or longest - lengths[lo - 1] < best[0]):
            best = (longest - lengths[lo - 1], -1)
        if best is None:
            break
        length = lengths[hi + 1] if best[1] > 0 else lengths[lo - 1]
        padded = (n + 1) * max(longest, length)
        if padded > limits.max_batch_tokens:
            break
        if n + 1 > limits.min_batch_size and padded > limits.max_padding_ratio * (real + length):
            break
        if best[1] > 0:
            hi += 1
            longest = max(longest, length)
        else:
            lo -= 1
        real += length
    return lo, hi


def fill_rows(lengths: Sequence[int], limits: BatcherLimits) -> list[int]:
    """Choose texts for packed rows (engines/packing.py) from ``lengths``, the waiting
    texts' lengths oldest first; returns their indices.

    Rows are ``pack_width`` tokens wide, or as wide as the oldest text. Each row starts with
    the oldest text not yet chosen, and its gap is then filled best fit: the longest waiting
    text that still fits, until none does. Age picks the rows' first texts, so every batch
    takes the oldest few and no text waits long (rows begun with the longest texts instead
    left texts that fitted no gap waiting for up to a second under load); fit fills the
    rest, so padding stays low.
    """
    count = len(lengths)
    width = max(limits.pack_width, lengths[0])
    most_rows = max(1, min(limits.pack_rows, limits.max_batch_tokens // width))
    rest = sorted(zip(lengths, range(count), strict=True))
    taken = [False] * count
    chosen: list[int] = []
    oldest = rows = 0
    while rows < most_rows and len(chosen) < limits.max_batch_size:
        while oldest < count and (taken[oldest] or lengths[oldest] > width):
            oldest += 1  # a text longer than the row waits to be the oldest of all
        if oldest == count:
            break
        rest.pop(bisect.bisect_left(rest, (lengths[oldest], oldest)))
        room, rows = width - lengths[oldest], rows + 1
        taken[oldest] = True
        chosen.append(oldest)
        while len(chosen) < limits.max_batch_size:
            k = bisect.bisect_right(rest, (room, count)) - 1
            if k < 0:
                break
            k = bisect.bisect_left(rest, (rest[k][0], -1))  # of that length, the oldest
            length, index = rest.pop(k)
            room -= length
            taken[index] = True
            chosen.append(index)
    return chosen
