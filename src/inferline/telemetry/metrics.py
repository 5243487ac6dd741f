"""Prometheus metrics. Buckets are chosen for this workload (milliseconds to seconds,
batches of 1 to a few hundred texts); see docs/observability.md."""

from __future__ import annotations

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

    def observe_batch(self, model: str, engine: str, report: BatchReport) -> None:
        self.batch_size.labels(model).observe(report.size)
        self.batch_tokens.labels(model).observe(report.padded_tokens)
        self.inference.labels(model, engine).observe(report.duration)
        self.tokens.labels(model, "input").inc(report.tokens)
        self.padding.labels(model).inc(report.padded_tokens - report.tokens)
        wait = self.queue_wait.labels(model)
        for seconds in report.queue_waits:
            wait.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
