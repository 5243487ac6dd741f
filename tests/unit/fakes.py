"""A real, deterministic Engine for unit tests: each output row is [tokens, sum of ids]."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import numpy as np

from inferline.errors import EngineError
from inferline.types import EngineInfo, FloatArray, Item


def item(*ids: int) -> Item:
    return Item(np.array(ids, dtype=np.int64))


class CountingEngine:
    """Records every batch; can be held (``gate``), made to fail, or to drop outputs."""

    def __init__(self) -> None:
        self.batches: list[list[Item]] = []
        self.gate: asyncio.Event | None = None
        self.fail_with: Exception | None = None
        self.drop_last = False
        self.poison: set[int] = set()  # first ids that fail their item alone
        self.deadlines: list[float | None] = []  # each batch's deadline(), as handed over

    @property
    def info(self) -> EngineInfo:
        return EngineInfo("fake", ("input_ids",), "out", 2, 512, "cpu", 2)

    async def infer(self, items: Sequence[Item]) -> Sequence[FloatArray | BaseException]:
        self.batches.append(list(items))
        deadline = getattr(items, "deadline", None)
        self.deadlines.append(deadline() if callable(deadline) else None)
        if self.gate is not None:
            await self.gate.wait()
        if self.fail_with is not None:
            raise self.fail_with
        out: list[FloatArray | BaseException] = []
        for it in items:
            if int(it.ids[0]) in self.poison:
                out.append(EngineError(f"cannot process item starting with {int(it.ids[0])}"))
            else:
                out.append(np.array([it.tokens, int(it.ids.sum())], dtype=np.float32))
        return out[:-1] if self.drop_last else out

    async def close(self) -> None:
        return None

    def seen(self) -> list[int]:
        return [int(it.ids[0]) for batch in self.batches for it in batch]
