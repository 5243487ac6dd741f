"""The running service: models loaded once, one engine and one batcher per model.

Every protocol (HTTP, OIP, the queue worker) goes through :meth:`Service.infer`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import functools
import gc
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from inferline.auth import ApiKeys
from inferline.batching import Batcher, BatcherLimits
from inferline.config import Settings
from inferline.engines import registry
from inferline.engines.remote import upstream_of
from inferline.errors import InvalidInput, NotFound, Unavailable
from inferline.modelrepo.manifest import Manifest
from inferline.tasks.embedding import EmbeddingTask
from inferline.tasks.sentiment import SentimentTask
from inferline.telemetry import context
from inferline.telemetry.metrics import Metrics
from inferline.tokenizer import TextEncoder
from inferline.types import ChatEngine, Engine, FloatArray, Item, Task

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
        self.chats: dict[str, ChatEngine] = {}  # chat/completions relays, by model id
        self.manifest: Manifest | None = None
        self.encoder: TextEncoder | None = None
        self.load_seconds = 0.0
        self.metrics = metrics or Metrics()
        self._start_task: asyncio.Task[None] | None = None
        self._drain_started: float | None = None  # monotonic, at begin_drain
        self._drain_mark: float | None = None  # the same moment, on the records' clock
        self._closers: list[Callable[[], Awaitable[None]]] = []

    # -- lifecycle --------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """Loaded, warmed up, not draining, and every remote engine's upstream is up."""
        return (
            self.state is State.READY
            and all(m.engine.ready for m in self.models.values())
            and all(c.ready for c in self.chats.values())
        )

    @functools.cached_property
    def keys(self) -> ApiKeys:
        """The API keys, one set for HTTP and gRPC: each protocol re-reads the keys file as
        its requests come, and two sets drifted apart after a rotation. Made on first use,
        so that a worker, which serves no API, needs no keys file."""
        return ApiKeys.from_settings(self.settings)

    def model_ready(self, name: str) -> bool:
        """Serving, and this model's engine can run: one model's upstream being down does
        not make the others unready."""
        model = self.models.get(name)
        return model is not None and bool(self._is_ready(model.engine))

    @property
    def status(self) -> str:
        """The state, or ``upstream_down`` when ready but a remote engine's upstream is not."""
        if self.state is State.READY and not self.ready:
            return "upstream_down"
        return self.state.value

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
        # What start-up allocated (the model, modules, tables) lives as long as the process:
        # out of the collector's sight, a full collection no longer walks it (a 30-40 ms
        # stall of the event loop at saturation before, measured). Garbage goes first.
        gc.collect()
        gc.freeze()
        if self.state is State.STARTING:
            self.state = State.READY
            self.metrics.load_seconds.set(self.load_seconds)
            log.info("ready in %.2f s", self.load_seconds, extra={"models": list(self.models)})

    def _load(self) -> None:
        s = self.settings
        manifest = Manifest.load(s.model_dir)
        config = registry.load_config(s.models_config)
        for field in ("max_batch_tokens", "max_queue_tokens"):
            if getattr(s, field) < manifest.max_tokens:  # else its longest texts never fit
                log.warning(
                    "%s %d is below the %d tokens one text may hold: %d is used",
                    field,
                    getattr(s, field),
                    manifest.max_tokens,
                    manifest.max_tokens,
                )
        limits = BatcherLimits(
            max_batch_size=s.max_batch_size,
            max_batch_tokens=max(s.max_batch_tokens, manifest.max_tokens),
            max_delay=s.max_delay_ms / 1000,
            max_padding_ratio=s.max_padding_ratio,
            min_batch_size=s.min_batch_size,
            max_queue_items=s.max_queue_items,
            max_queue_tokens=max(s.max_queue_tokens, manifest.max_tokens),
            concurrency=s.lanes + 1,  # set per engine below
            pack_rows=s.pack_rows,
        )
        tasks: dict[str, Task] = {
            "embedding": EmbeddingTask(),
            "sentiment": SentimentTask(manifest.labels),
        }
        for name in manifest.models:
            engine = registry.create_engine(name, s, manifest, config, self.metrics)
            info = engine.info
            engine_limits = dataclasses.replace(
                limits,
                # One batch more than lanes: the next batch waits in the executor (or is on
                # its way upstream), so a lane that finishes starts at once instead of
                # waiting for the event loop to cut a batch.
                concurrency=info.lanes + 1,
                # Padding costs compute only where the batch is padded; a remote engine's
                # upstream batches on its own, so its batches only need to be full.
                max_padding_ratio=limits.max_padding_ratio if info.pads else math.inf,
                # An engine that packs rows wastes no padding: the batcher fills its rows.
                pack_width=info.row_width,
            )
            hook = self.metrics.batch_observer(name, info.engine)
            batcher = Batcher(
                engine.infer, engine_limits, name=name, engine=info.engine, on_batch=hook
            )
            self.metrics.track(self.metrics.queue_depth.labels(name), _depth(batcher))
            self.metrics.track(
                self.metrics.model_ready.labels(name), functools.partial(self._is_ready, engine)
            )
            self.models[name] = Model(name, engine, batcher, tasks[name])
        self.chats = registry.create_chat_engines(config, self.metrics)
        self.encoder = TextEncoder(s.model_dir / manifest.tokenizer, manifest.max_tokens)
        self.manifest = manifest

    async def _warm_up(self) -> None:
        """Each engine starts (a remote one checks its upstream), then runs a warm-up batch
        if it can. A remote upstream that is down does not fail the start: readiness stays
        503 until it is back."""
        assert self.encoder is not None
        items = self.encoder.encode(WARMUP_TEXTS)
        for chat in self.chats.values():
            await chat.start()
        for model in self.models.values():
            await model.engine.start()
            if not model.engine.ready:
                continue
            step = model.batcher.limits.max_queue_items  # a queue smaller than the warm-up
            try:
                for start in range(0, len(items), step):
                    await model.batcher.submit_many(items[start : start + step])
            except Unavailable as exc:  # the upstream went away meanwhile
                log.warning("warm-up of %s skipped: %s", model.name, exc)
            model.batcher.forget_drain_rate()

    def _is_ready(self, engine: Engine) -> float:
        """1 while the service serves and this model's engine can run (a remote engine's
        upstream is up)."""
        return 1.0 if self.state is State.READY and engine.ready else 0.0

    def begin_drain(self) -> None:
        """Stop admitting new work; what was accepted still runs."""
        if self.state in (State.STARTING, State.READY):
            if self.state is State.READY:  # while starting, nothing could have been accepted
                self._drain_mark = time.perf_counter()
            self.state = State.DRAINING
            self._drain_started = time.monotonic()

    async def close(self, grace: float = 30.0) -> None:
        """Refuse new work, finish what was accepted within ``grace``, release the engines.
        After :meth:`begin_drain` the grace period counts from then, not from now."""
        if self._drain_started is not None:
            grace = max(0.0, grace - (time.monotonic() - self._drain_started))
        if self.state is not State.FAILED:
            self.state = State.DRAINING
        if self._start_task is not None and not self._start_task.done():
            self._start_task.cancel()
        await asyncio.gather(*(m.batcher.close(grace) for m in self.models.values()))
        for model in self.models.values():
            await model.engine.close()
        for chat in self.chats.values():
            await chat.close()
        for closer in self._closers:
            await closer()

    def on_close(self, closer: Callable[[], Awaitable[None]]) -> None:
        """Run ``closer`` at the end of ``close`` (clients the protocol layers opened)."""
        self._closers.append(closer)

    # -- inference --------------------------------------------------------------------------

    def model(self, name: str) -> Model:
        if self.state is not State.READY and not self._in_flight_at_drain():
            raise Unavailable(self.not_ready_reason())
        try:
            return self.models[name]
        except KeyError:
            raise NotFound(
                f"unknown model {name!r}; known: {', '.join(sorted(self.models))}"
            ) from None

    def chat(self, name: str) -> ChatEngine:
        """The chat/completions relay that serves model id ``name``."""
        if self.state is not State.READY and not self._in_flight_at_drain():
            raise Unavailable(self.not_ready_reason())
        try:
            return self.chats[name]
        except KeyError:
            known = ", ".join(sorted(self.chats)) or "none is configured"
            raise NotFound(f"the model {name!r} does not exist; chat models: {known}") from None

    def _in_flight_at_drain(self) -> bool:
        """Whether the current request began before the drain: its headers came before the
        signal (its body may still have been on the way), so it is accepted work."""
        if self.state is not State.DRAINING or self._drain_mark is None:
            return False
        record = context.current()
        return record is not None and record.started < self._drain_mark

    def saturated(self) -> bool:
        """Whether some model's queue is full: only then can a request be refused early.
        Asked once per request under overload: a plain loop, no generator."""
        for model in self.models.values():  # noqa: SIM110 - any() and a generator: 4x slower
            if model.batcher.full:
                return True
        return False

    def admit(self, name: str) -> Model:
        """The model, if it can take work now: raises Unavailable, NotFound or Overloaded."""
        model = self.model(name)
        record = context.current()
        if record is not None:  # a known name only: the label's values stay bounded
            record.model = name  # a 429 below is counted under the model it waited for
        model.batcher.check_room()
        return model

    def not_ready_reason(self, model: str | None = None) -> str:
        """Why the service (or ``model``) is not ready."""
        if model is not None and self.state is State.READY:
            return f"{upstream_of(model)} is unavailable"
        return self._not_ready()

    def _not_ready(self) -> str:
        if self.state is State.FAILED:
            # The detail (paths included) goes to the log only.
            return "the model failed to load (has `inferline model build` run?); see the log"
        if self.state is State.DRAINING:
            return "the service is shutting down"
        if self.state is State.READY:
            down = [n for n, m in self.models.items() if not m.engine.ready]
            down += [n for n, c in self.chats.items() if not c.ready]
            if len(down) == 1:
                return f"{upstream_of(down[0])} is unavailable"
            names = ", ".join(repr(n) for n in sorted(down))
            return f"the upstreams of models {names} are unavailable"
        return "the model is still loading"

    async def encode(self, texts: Sequence[str]) -> list[Item]:
        if self.encoder is None:
            raise Unavailable(self.not_ready_reason())
        if sum(len(t) for t in texts) <= INLINE_TOKENIZE_CHARS:
            return self.encoder.encode(texts)
        encode = functools.partial(self.encoder.encode, texts, release_gil=True)
        return await asyncio.to_thread(encode)

    async def infer(
        self, name: str, texts: Sequence[str], deadline: float | None = None
    ) -> tuple[Model, list[Item], list[FloatArray]]:
        """Tokenise, batch and run ``texts`` on model ``name``; rows come back in order."""
        model = self.admit(name)
        if not texts:
            raise InvalidInput("no texts given")
        items = await self.encode(texts)
        tokens = sum(item.tokens for item in items)
        if not model.engine.info.sends_text:  # a remote model tokenises in its own way
            _refuse_empty(items)
        record = context.current()
        if record is not None:
            record.model = name
            record.items += len(items)
            record.tokens += tokens
            if self.settings.log_texts:
                record.texts = texts
        if tokens > self.settings.max_request_tokens:
            raise InvalidInput(
                f"the request has {tokens} tokens; the limit is "
                f"{self.settings.max_request_tokens} per request"
            )
        self.metrics.observe_input_tokens(name, tokens)  # of requests that go on to queue
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


def _refuse_empty(items: Sequence[Item]) -> None:
    """A text that tokenises to nothing (zero-width, control or combining characters alone)
    would get the empty string's answer: refused, as an empty text is."""
    for i, item in enumerate(items):
        if item.tokens <= 2:  # [CLS] and [SEP] alone
            where = "the text" if len(items) == 1 else f"text {i} (counting from 0)"
            raise InvalidInput(
                f"{where} has nothing the model reads: only spaces, control, zero-width or "
                "combining characters"
            )
