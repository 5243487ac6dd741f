"""Structured logs, refusal reasons and the metrics' process modes."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from inferline.errors import (
    DeadlineExceeded,
    InvalidInput,
    NotFound,
    Overloaded,
    PayloadTooLarge,
    Unauthorized,
    Unavailable,
    reason_of,
)
from inferline.telemetry import gpu, logs
from inferline.telemetry.context import RequestRecord
from inferline.telemetry.gpu import GpuCollector


def logged(
    emit: Callable[[], None], stream: io.StringIO | io.TextIOWrapper | None = None
) -> list[dict[str, object]]:
    stream = stream or io.StringIO()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    logs.configure("info", stream)
    try:
        emit()
    finally:
        logs.flush()
        root.handlers[:], root.level = handlers, level
    if isinstance(stream, io.TextIOWrapper):
        raw = stream.buffer
        assert isinstance(raw, io.BytesIO)
        return [json.loads(line) for line in raw.getvalue().splitlines()]
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_records_are_json_lines_with_their_extra_fields() -> None:
    def emit() -> None:
        log = logging.getLogger("inferline.test")
        log.info("loaded %d models", 2, extra={"models": ["a", "b"]})
        log.debug("not at info")
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("failed")

    info, error = logged(emit)
    assert info["level"] == "info" and info["logger"] == "inferline.test"
    assert info["message"] == "loaded 2 models" and info["models"] == ["a", "b"]
    assert "trace_id" not in info  # no span, no ids
    assert error["level"] == "error"
    assert "ValueError: boom" in str(error["exception"])


def test_the_access_line_keeps_texts_out_unless_asked() -> None:
    record = RequestRecord("rest", model="sentiment", status="200", items=1, tokens=5)
    record.batched(0.002, 0.004)
    (line,) = logged(lambda: logs.access(record, 0.0071))
    assert line["logger"] == "inferline.access"
    assert line["queue_wait_ms"] == 2.0 and line["inference_ms"] == 4.0
    assert line["duration_ms"] == 7.1 and line["tokens"] == 5
    assert "texts" not in line
    record.texts = ["my secret review"]
    (line,) = logged(lambda: logs.access(record, 0.001))
    assert line["texts"] == ["my secret review"]


def test_access_lines_and_records_share_a_binary_stream() -> None:
    """Access lines go to the stream's bytes layer, records through its text layer: both
    arrive whole, as JSON lines, non-ASCII included."""
    record = RequestRecord("rest", model="sentiment", status="429")

    def emit() -> None:
        logging.getLogger("inferline.test").warning("before: café")
        for _ in range(3):
            logs.access(record, 0.0005, {"path": "/prédict"})

    lines = logged(emit, io.TextIOWrapper(io.BytesIO(), encoding="utf-8"))
    assert [line["message"] for line in lines].count("request") == 3
    assert {"before: café"} == {line["message"] for line in lines} - {"request"}
    assert all(line["path"] == "/prédict" for line in lines if line["message"] == "request")


@settings(max_examples=2000, deadline=None)
@given(
    st.floats(min_value=0, max_value=4e9) | st.integers(0, 4 * 10**9).map(lambda s: s + 0.9999995)
)
def test_log_times_are_what_datetime_would_write(created: float) -> None:
    expected = datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")
    assert logs._iso(created) == expected


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (InvalidInput("x"), "invalid"),
        (InvalidInput("x", status=409), "conflict"),  # a job id used for other work
        (PayloadTooLarge("x"), "too_large"),
        (Unauthorized("x"), "unauthorized"),
        (NotFound("x"), "not_found"),
        (Overloaded("x"), "queue_full"),
        (Overloaded("x", reason="key_limit"), "key_limit"),
        (Unavailable("x"), "unavailable"),
        (DeadlineExceeded("x"), "deadline"),
    ],
)
def test_refusal_reasons(error: Exception, reason: str) -> None:
    assert reason_of(error) == reason  # type: ignore[arg-type]


def test_gpu_collector_only_with_a_gpu() -> None:
    """No GPU (CI): no collector and no series, not zeros. On a GPU machine with NVML: the
    three gauges for every device, with the memory figures filled in."""
    registry = CollectorRegistry()
    present = GpuCollector.register_if_present(registry)
    assert present == gpu.present()
    families = {f.name: f for f in registry.collect()}
    if not present:
        assert not families
        return
    assert set(families) == set(gpu.GPU_METRICS)
    total = families["inferline_gpu_memory_total_bytes"].samples
    assert total and all(sample.value > 0 for sample in total)


SCRIPT = """
from inferline.telemetry.context import RequestRecord
from inferline.telemetry.metrics import Metrics
metrics = Metrics()
assert metrics.multiprocess
metrics.record_request(RequestRecord("rest", model="sentiment", status="200"), 0.01)
metrics.inflight.inc()
metrics.load_seconds.set(0.25)
print(metrics.render().decode())
metrics.process_exits()
"""


def test_multiprocess_mode_merges_every_process(tmp_path: Path) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    outputs = [
        subprocess.run(
            [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, check=True
        ).stdout
        for _ in range(2)
    ]
    labels = 'model="sentiment",protocol="rest",status="200"'
    # The second process's scrape counts both processes' requests.
    assert f"inferline_requests_total{{{labels}}} 2.0" in outputs[1]
    assert f"inferline_request_duration_seconds_count{{{labels}}} 2.0" in outputs[1]
    # Its gauges are its own: the first process exited and took its in-flight one along.
    assert "inferline_inflight_requests 1.0" in outputs[1], outputs[1]
    # Every gauge file goes with its process, the max-mode ones (load time) too.
    assert not list(tmp_path.glob("gauge_*")), sorted(p.name for p in tmp_path.iterdir())


def test_refusal_lines_are_capped_each_second_and_the_rest_counted() -> None:
    lines = logs._RefusalLines(2)
    key = ("rest", "", "POST", "/predict", "429")
    grpc = ("oip_grpc", "sentiment", "ModelInfer", "", "RESOURCE_EXHAUSTED")
    assert [lines.admit(100.1, key) for _ in range(3)] == [True, True, False]
    assert not lines.admit(100.9, grpc)
    assert lines.admit(101.0, key)  # a new second lets lines through again
    assert lines.take() == (100.1, {key: 1, grpc: 1})
    assert lines.take() is None  # counted once


@pytest.mark.parametrize("per_second", [0, 2])
@pytest.mark.parametrize(
    ("protocol", "status", "where"),
    [
        ("rest", "429", {"method": "POST", "path": "/predict"}),
        ("oip_grpc", "RESOURCE_EXHAUSTED", {"method": "ModelInfer"}),
    ],
)
def test_refusals_past_the_limit_are_logged_as_counts(
    per_second: int, protocol: str, status: str, where: dict[str, str]
) -> None:
    refused = RequestRecord(protocol, model="sentiment", status=status)
    served = RequestRecord("rest", model="sentiment", status="200", items=1)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    stream = io.StringIO()
    logs.configure("info", stream, refusal_lines=per_second)
    try:
        for _ in range(5):
            logs.access(refused, 0.0004, where)
        logs.access(served, 0.004, {"method": "POST", "path": "/predict"})
    finally:
        logs.flush()
        root.handlers[:], root.level = handlers, level
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    requests = [line for line in lines if line["message"] == "request"]
    assert [line["status"] for line in requests].count("200") == 1  # served: always a line
    shown = [line["status"] for line in requests].count(status)
    (counts,) = [line for line in lines if line["message"] == "refusals"]
    assert counts["logger"] == "inferline.access"
    counted = (counts["protocol"], counts["model"], counts["status"])
    assert counted == (protocol, "sentiment", status)
    assert {k: counts[k] for k in where} == where
    # Unless the clock's second turned during the loop, the limit held exactly.
    assert shown + counts["count"] == 5 and per_second <= shown <= 2 * per_second
