"""The contracts between the layers: what an item, an engine and a task are."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class Item:
    """One tokenised text, validated and ready to batch."""

    ids: npt.NDArray[np.int64]
    truncated: bool = False
    tokens: int = field(init=False)  # read on every batching decision: a field, not a property

    def __post_init__(self) -> None:
        object.__setattr__(self, "tokens", int(self.ids.shape[0]))


@dataclass(frozen=True, slots=True)
class EngineInfo:
    """What a model served by an engine takes and gives."""

    name: str
    inputs: Sequence[str]
    output: str
    output_dim: int
    max_tokens: int
    device: str
    lanes: int


class Engine(Protocol):
    """Runs one batch. CPU- or I/O-bound work must not run on the event loop.

    ``infer`` returns exactly one output row per input, in order. An engine may put an
    exception in place of an output to fail that item alone.
    """

    @property
    def info(self) -> EngineInfo: ...

    async def infer(self, items: Sequence[Item]) -> Sequence[FloatArray | BaseException]: ...

    async def close(self) -> None: ...


class Task(Protocol):
    """Turns one engine output row into the client-facing result of a model."""

    name: str

    def result(self, row: FloatArray, item: Item) -> dict[str, Any]: ...
