"""Prometheus metrics. Buckets are chosen for this workload (milliseconds to seconds,
batches of 1 to a few hundred texts); see docs/observability.md."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from inferline.batching import BatchReport

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
TOKEN_BUCKETS = (16, 64, 256, 512, 1024, 2048, 4096, 8192, 16384)


class Metrics:
    """The service's metrics, in a registry of their own (tests create several)."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.queue_wait = Histogram(
            "inferline_queue_wait_seconds",
            "Time a text waited before its batch ran",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.inference = Histogram(
            "inferline_inference_duration_seconds",
            "Engine time per batch",
            ["model", "engine"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "inferline_batch_size", "Texts per batch", ["model"], buckets=SIZE_BUCKETS, registry=r
        )
        self.batch_tokens = Histogram(
            "inferline_batch_tokens",
            "Padded tokens per batch",
            ["model"],
            buckets=TOKEN_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            "inferline_tokens_total", "Tokens processed", ["model", "direction"], registry=r
        )
        self.padding = Counter(
            "inferline_padding_tokens_total", "Padding tokens the engine ran", ["model"], registry=r
        )
        self.queue_depth = Gauge(
            "inferline_queue_depth", "Texts waiting per model", ["model"], registry=r
        )

    def batch_observer(self, model: str, engine: str) -> Callable[[BatchReport], None]:
        """A hook for one model's batcher, with its labelled children looked up once."""
        size = self.batch_size.labels(model)
        tokens = self.batch_tokens.labels(model)
        duration = self.inference.labels(model, engine)
        real = self.tokens.labels(model, "input")
        padding = self.padding.labels(model)
        wait = self.queue_wait.labels(model)

        def observe(report: BatchReport) -> None:
            size.observe(report.size)
            tokens.observe(report.padded_tokens)
            duration.observe(report.duration)
            real.inc(report.tokens)
            padding.inc(report.padded_tokens - report.tokens)
            for seconds in report.queue_waits:
                wait.observe(seconds)

        return observe

    def render(self) -> bytes:
        return generate_latest(self.registry)
