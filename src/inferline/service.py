"""The running service: models loaded once, one engine and one batcher per model.

Every protocol (HTTP, OIP, the queue worker) goes through :meth:`Service.infer`.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from inferline.batching import Batcher, BatcherLimits
from inferline.config import Settings
from inferline.engines.onnx import OnnxEngine
from inferline.errors import InvalidInput, NotFound, Unavailable
from inferline.modelrepo.manifest import Manifest
from inferline.tasks.embedding import EmbeddingTask
from inferline.tasks.sentiment import SentimentTask
from inferline.telemetry.metrics import Metrics
from inferline.tokenizer import TextEncoder
from inferline.types import Engine, FloatArray, Item, Task

log = logging.getLogger(__name__)

# Texts up to this many characters in total are tokenised on the event loop (tens of
# microseconds); longer requests go to a thread so that the loop never stalls.
INLINE_TOKENIZE_CHARS = 8192
WARMUP_TEXTS = ["warm up", "a slightly longer sentence to warm up the model with padding"] * 4


class State(enum.Enum):
    STARTING = "starting"
    READY = "ready"
    DRAINING = "draining"
    FAILED = "failed"


@dataclass(slots=True)
class Model:
    name: str
    engine: Engine
    batcher: Batcher
    task: Task


class Service:
    def __init__(self, settings: Settings, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.state = State.STARTING
        self.failure: str | None = None
        self.models: dict[str, Model] = {}
        self.manifest: Manifest | None = None
        self.encoder: TextEncoder | None = None
        self.load_seconds = 0.0
        self.metrics = metrics or Metrics()
        self._start_task: asyncio.Task[None] | None = None

    # -- lifecycle --------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self.state is State.READY

    def start_background(self) -> None:
        """Load and warm up without blocking the server, so probes answer meanwhile."""
        self._start_task = asyncio.get_running_loop().create_task(self.start())

    async def start(self) -> None:
        started = time.monotonic()
        try:
            await asyncio.to_thread(self._load)
            for model in self.models.values():
                model.batcher.start()
            await self._warm_up()
        except Exception as exc:
            self.state = State.FAILED
            self.failure = str(exc)
            log.error("model load failed: %s", exc)
            return
        self.load_seconds = time.monotonic() - started
        if self.state is State.STARTING:
            self.state = State.READY
            log.info("ready in %.2f s", self.load_seconds, extra={"models": list(self.models)})

    def _load(self) -> None:
        s = self.settings
        manifest = Manifest.load(s.model_dir)
        precision = (
            s.precision if s.precision != "auto" else ("fp32" if s.device == "cuda" else "int8")
        )
        limits = BatcherLimits(
            max_batch_size=s.max_batch_size,
            max_batch_tokens=max(s.max_batch_tokens, manifest.max_tokens),
            max_delay=s.max_delay_ms / 1000,
            max_padding_ratio=s.max_padding_ratio,
            min_batch_size=s.min_batch_size,
            max_queue_items=s.max_queue_items,
            max_queue_tokens=max(s.max_queue_tokens, manifest.max_tokens),
            # One batch more than lanes: the next batch waits in the executor, so a lane that
            # finishes starts at once instead of waiting for the event loop to cut a batch.
            concurrency=s.lanes + 1,
        )
        tasks: dict[str, Task] = {
            "embedding": EmbeddingTask(),
            "sentiment": SentimentTask(manifest.labels),
        }
        for name, spec in manifest.models.items():
            engine = OnnxEngine(
                s.model_dir / spec.files[precision],
                name=name,
                output=spec.output,
                output_dim=spec.output_dim,
                max_tokens=manifest.max_tokens,
                device=s.device,
                lanes=s.lanes,
                intra_op_threads=s.intra_op_threads,
            )
            hook = self.metrics.batch_observer(name, "onnx")
            batcher = Batcher(engine.infer, limits, name=name, on_batch=hook)
            self.metrics.queue_depth.labels(name).set_function(_depth(batcher))
            self.models[name] = Model(name, engine, batcher, tasks[name])
        self.encoder = TextEncoder(s.model_dir / manifest.tokenizer, manifest.max_tokens)
        self.manifest = manifest

    async def _warm_up(self) -> None:
        assert self.encoder is not None
        items = self.encoder.encode(WARMUP_TEXTS)
        for model in self.models.values():
            await model.batcher.submit_many(items)

    def begin_drain(self) -> None:
        """Stop admitting new work; what was accepted still runs."""
        if self.state in (State.STARTING, State.READY):
            self.state = State.DRAINING

    async def close(self, grace: float = 30.0) -> None:
        """Refuse new work, finish what was accepted within ``grace``, release the engines."""
        if self.state is not State.FAILED:
            self.state = State.DRAINING
        if self._start_task is not None and not self._start_task.done():
            self._start_task.cancel()
        await asyncio.gather(*(m.batcher.close(grace) for m in self.models.values()))
        for model in self.models.values():
            await model.engine.close()

    # -- inference --------------------------------------------------------------------------

    def model(self, name: str) -> Model:
        if self.state is not State.READY:
            raise Unavailable(self.not_ready_reason())
        try:
            return self.models[name]
        except KeyError:
            raise NotFound(
                f"unknown model {name!r}; known: {', '.join(sorted(self.models))}"
            ) from None

    def admit(self, name: str) -> Model:
        """The model, if it can take work now: raises Unavailable, NotFound or Overloaded."""
        model = self.model(name)
        model.batcher.check_room()
        return model

    def not_ready_reason(self) -> str:
        if self.state is State.FAILED:
            # The detail (paths included) goes to the log only.
            return "the model failed to load (has `inferline model build` run?); see the log"
        if self.state is State.DRAINING:
            return "the service is shutting down"
        return "the model is still loading"

    async def encode(self, texts: Sequence[str]) -> list[Item]:
        if self.encoder is None:
            raise Unavailable(self.not_ready_reason())
        if sum(len(t) for t in texts) <= INLINE_TOKENIZE_CHARS:
            return self.encoder.encode(texts)
        return await asyncio.to_thread(self.encoder.encode, texts)

    async def infer(
        self, name: str, texts: Sequence[str], deadline: float | None = None
    ) -> tuple[Model, list[Item], list[FloatArray]]:
        """Tokenise, batch and run ``texts`` on model ``name``; rows come back in order."""
        model = self.admit(name)
        if not texts:
            raise InvalidInput("no texts given")
        items = await self.encode(texts)
        tokens = sum(item.tokens for item in items)
        if tokens > self.settings.max_request_tokens:
            raise InvalidInput(
                f"the request has {tokens} tokens; the limit is "
                f"{self.settings.max_request_tokens} per request"
            )
        if len(items) == 1:
            rows = [await model.batcher.submit(items[0], deadline)]
        else:
            rows = await model.batcher.submit_many(items, deadline)
        return model, items, rows

    async def results(
        self, name: str, texts: Sequence[str], deadline: float | None = None
    ) -> list[dict[str, Any]]:
        model, items, rows = await self.infer(name, texts, deadline)
        return [model.task.result(row, item) for row, item in zip(rows, items, strict=True)]


def _depth(batcher: Batcher) -> Callable[[], float]:
    return lambda: float(batcher.queue_depth)
