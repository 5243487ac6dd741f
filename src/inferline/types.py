"""The contracts between the layers: what an item, an engine and a task are."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager
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
    text: str = ""  # the text itself, for remote engines; a reference, so it costs nothing
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
    lanes: int  # batches it runs at once (threads locally, requests in flight remotely)
    engine: str = "local"  # which engine: the ``engine`` label of the metrics
    pads: bool = True  # batches are padded here, so the batcher limits padding; remote: no
    sends_text: bool = False  # the model reads Item.text (a remote one, with its tokenizer)
    row_width: int = 0  # >0: short texts share rows this wide (engines/packing.py), no padding


class Engine(Protocol):
    """Runs one batch. CPU- or I/O-bound work must not run on the event loop.

    ``infer`` returns exactly one output row per input, in order. An engine may put an
    exception in place of an output to fail that item alone.
    """

    @property
    def info(self) -> EngineInfo: ...

    @property
    def ready(self) -> bool:
        """Whether it can run batches now: local once loaded; remote while its upstream's
        health check passes (its circuit breaker is closed)."""
        ...

    async def start(self) -> None:
        """Before the warm-up: a remote engine checks its upstream once and starts watching
        it. Never raises for an upstream that is down; ``ready`` says so."""
        ...

    async def infer(self, items: Sequence[Item]) -> Sequence[FloatArray | BaseException]: ...

    async def close(self) -> None: ...


class ChatReply(Protocol):
    """An upstream's successful answer to a chat or completions request, not yet read."""

    status: int
    content_type: bytes
    upstream: str  # how errors name it: "the upstream of model 'X'"

    def chunks(self) -> AsyncIterator[bytes]:
        """The body, chunk by chunk as it arrives; read only as fast as the caller asks."""
        ...


class ChatEngine(Protocol):
    """Relays OpenAI chat/completions requests upstream (no batching: generation streams).

    ``open`` retries what is safe to retry before the reply starts, and raises an
    :class:`~inferline.errors.InferlineError` for an upstream that cannot answer."""

    @property
    def ready(self) -> bool: ...

    async def start(self) -> None: ...

    def open(
        self, path: str, body: dict[str, Any], deadline: float | None = None
    ) -> AbstractAsyncContextManager[ChatReply]:
        """Send ``body`` (its ``model`` already the upstream's) to ``path``, e.g.
        ``/chat/completions``; the reply is closed, and the upstream request with it, on
        leaving the context. ``deadline`` (``time.monotonic()``), when sooner than the
        engine's own timeout, bounds the wait for the reply to start."""
        ...

    async def close(self) -> None: ...


class Task(Protocol):
    """Turns one engine output row into the client-facing result of a model."""

    name: str

    def result(self, row: FloatArray, item: Item) -> dict[str, Any]: ...
