"""The Grafana dashboard queries only metrics that a real server exposes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from inferline.telemetry.gpu import GPU_METRICS
from tests.conftest import Server

pytestmark = pytest.mark.integration

DASHBOARD = Path(__file__).parents[2] / "deploy" / "grafana" / "inferline.json"
SUFFIXES = ("_bucket", "_sum", "_count", "_total")


def queried_metrics() -> set[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    assert exprs
    return {name for expr in exprs for name in re.findall(r"\binferline_[a-z_]+\b", expr)}


def family_of(name: str, families: set[str]) -> str | None:
    if name in families:
        return name
    for suffix in SUFFIXES:
        if name.endswith(suffix) and name.removesuffix(suffix) in families:
            return name.removesuffix(suffix)
    return None


def test_every_queried_metric_exists(server: Server) -> None:
    assert httpx.post(server.url + "/predict", json={"text": "ok"}).status_code == 200
    text = httpx.get(server.url + "/metrics").text
    families = {family.name for family in text_string_to_metric_families(text)}
    # No GPU on the test machines: those series exist only where NVML finds one.
    missing = {
        name
        for name in queried_metrics()
        if family_of(name, families) is None and name not in GPU_METRICS
    }
    assert not missing, f"the dashboard queries metrics the server does not have: {missing}"


def test_the_dashboard_covers_what_operators_need() -> None:
    queried = queried_metrics()
    for needed in (
        "inferline_requests_total",
        "inferline_request_duration_seconds_bucket",
        "inferline_queue_wait_seconds_bucket",
        "inferline_batch_size_sum",
        "inferline_tokens_total",
        "inferline_rejected_total",
        "inferline_stream_lag",
        "inferline_gpu_memory_used_bytes",
    ):
        assert needed in queried
