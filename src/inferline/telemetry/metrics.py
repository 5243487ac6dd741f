"""Prometheus metrics. Every name, label and bucket is listed in docs/observability.md.

Buckets are chosen for this workload: requests take milliseconds to seconds, batches hold 1
to a few hundred texts, and reviews are tens to hundreds of tokens.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from inferline.batching import BatchReport
from inferline.telemetry.context import RequestRecord
from inferline.telemetry.gpu import GpuCollector

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# A request's whole time: jobs wait in the stream and relayed chats generate, for minutes.
REQUEST_BUCKETS = (*LATENCY_BUCKETS, 30.0, 60.0, 120.0, 300.0)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
TOKEN_BUCKETS = (16, 64, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536)
TPS_BUCKETS = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# The *_created series double the output, and nobody queries them.
disable_created_metrics()  # type: ignore[no-untyped-call]


class Metrics:
    """The service's metrics, in a registry of their own (tests create several).

    With ``PROMETHEUS_MULTIPROC_DIR`` set (several server processes), values live in that
    directory and ``render`` merges every process's; gauges then sum across processes.
    """

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, *, gpu: bool = True) -> None:
        r = self.registry = CollectorRegistry()
        self.multiprocess = bool(os.environ.get(MULTIPROC_ENV))

        def hist(name: str, doc: str, labels: list[str], buckets: tuple[float, ...]) -> Histogram:
            return Histogram(name, doc, labels, buckets=buckets, registry=r)

        self.request_duration = hist(
            "inferline_request_duration_seconds",
            "Time from a request's arrival to its response",
            ["protocol", "model", "status"],
            REQUEST_BUCKETS,
        )
        self.queue_wait = hist(
            "inferline_queue_wait_seconds",
            "Time a text waited before its batch ran",
            ["model"],
            LATENCY_BUCKETS,
        )
        self.inference = hist(
            "inferline_inference_duration_seconds",
            "Engine time per batch",
            ["model", "engine"],
            LATENCY_BUCKETS,
        )
        self.batch_size = hist("inferline_batch_size", "Texts per batch", ["model"], SIZE_BUCKETS)
        self.batch_tokens = hist(
            "inferline_batch_tokens", "Padded tokens per batch", ["model"], TOKEN_BUCKETS
        )
        self.input_tokens = hist(
            "inferline_input_tokens", "Tokens per request", ["model"], TOKEN_BUCKETS
        )
        self.ttft = hist(
            "inferline_time_to_first_token_seconds",
            "Time to the first streamed token from a remote engine",
            ["engine"],
            LATENCY_BUCKETS,
        )
        self.output_tps = hist(
            "inferline_output_tokens_per_second",
            "Output tokens per second of one streamed generation, after its first token",
            ["engine"],
            TPS_BUCKETS,
        )
        self.requests = Counter(
            "inferline_requests",
            "Requests answered",
            ["protocol", "model", "status"],
            registry=r,
        )
        self.tokens = Counter(
            "inferline_tokens", "Tokens processed", ["model", "direction"], registry=r
        )
        self.rejected = Counter(
            "inferline_rejected", "Requests refused, by reason", ["reason"], registry=r
        )
        self.jobs = Counter(
            "inferline_jobs", "Queue jobs, by outcome", ["model", "outcome"], registry=r
        )
        self.padding = Counter(
            "inferline_padding_tokens", "Padding tokens the engine ran", ["model"], registry=r
        )
        self.queue_depth = Gauge(
            "inferline_queue_depth",
            "Texts waiting per model",
            ["model"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.inflight = Gauge(
            "inferline_inflight_requests",
            "Requests being served",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.stream_lag = Gauge(
            "inferline_stream_lag",
            "Entries in the job stream not yet delivered to the worker group",
            ["stream"],
            registry=r,
            multiprocess_mode="max",
        )
        self.stream_pending = Gauge(
            "inferline_stream_pending",
            "Entries delivered to workers and not yet acknowledged",
            ["stream"],
            registry=r,
            multiprocess_mode="max",
        )
        self.model_ready = Gauge(
            "inferline_model_ready",
            "1 when the model serves",
            ["model"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.load_seconds = Gauge(
            "inferline_model_load_seconds",
            "Time from start to ready (load and warm-up)",
            registry=r,
            multiprocess_mode="max",
        )
        if gpu and not self.multiprocess:
            GpuCollector.register_if_present(r)
        self._request_children: dict[tuple[str, str, str], tuple[Histogram, Counter]] = {}
        self._token_children: dict[str, Histogram] = {}
        self._rejected_children: dict[str, Counter] = {}
        self._tracked: list[tuple[Gauge, Callable[[], float]]] = []
        self._refresher: threading.Thread | None = None

    def track(self, gauge: Gauge, read: Callable[[], float]) -> None:
        """Report ``read()`` as the gauge's value. In one process it is read at scrape time;
        with several, a thread writes it every second (the merge reads files only)."""
        if not self.multiprocess:
            gauge.set_function(read)
            return
        self._tracked.append((gauge, read))
        if self._refresher is None:
            self._refresher = threading.Thread(target=self._refresh, daemon=True)
            self._refresher.start()

    def _refresh(self) -> None:
        while True:  # a daemon thread: it ends with the process
            time.sleep(1.0)
            for gauge, read in list(self._tracked):
                gauge.set(read())

    def record_request(self, record: RequestRecord, duration: float) -> None:
        """Count one finished request (children are cached: labels() costs microseconds)."""
        key = (record.protocol, record.model, str(record.status))
        children = self._request_children.get(key)
        if children is None:
            children = (self.request_duration.labels(*key), self.requests.labels(*key))
            self._request_children[key] = children
        children[0].observe(duration)
        children[1].inc()

    def reject(self, reason: str) -> None:
        """Count one refusal (under overload there are thousands a second)."""
        child = self._rejected_children.get(reason)
        if child is None:
            child = self._rejected_children[reason] = self.rejected.labels(reason)
        child.inc()

    def observe_input_tokens(self, model: str, tokens: int) -> None:
        child = self._token_children.get(model)
        if child is None:
            child = self._token_children[model] = self.input_tokens.labels(model)
        child.observe(tokens)

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

    def process_exits(self) -> None:
        """In multiprocess mode, take this process's live gauges out of the shared directory
        (its counters and histograms stay in the totals): otherwise a restarted process's
        gauges, model_ready among them, would count twice."""
        if self.multiprocess:
            from prometheus_client import multiprocess

            pid = os.getpid()
            multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
            # mark_process_dead removes the livesum files only; the max-mode gauges (load
            # time, stream lag and pending) would stay in every later scrape.
            for path in Path(os.environ[MULTIPROC_ENV]).glob(f"gauge_*_{pid}.db"):
                path.unlink(missing_ok=True)

    def render(self) -> bytes:
        if self.multiprocess:
            from prometheus_client import multiprocess

            merged = CollectorRegistry()
            multiprocess.MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
            return generate_latest(merged)
        return generate_latest(self.registry)
