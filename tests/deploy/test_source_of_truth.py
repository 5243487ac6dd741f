"""The names the manifests share with the application are the application's own: queue
stream and group, metric names, and INFERLINE_* settings."""

from __future__ import annotations

import re
from typing import Any

import pytest

from inferline.config import Settings
from inferline.queue.keys import QueueKeys
from inferline.telemetry.metrics import Metrics
from tests.deploy.kustomize import containers
from tests.deploy.manifests import OVERLAYS, find, of_kind, rendered

pytestmark = pytest.mark.parametrize("overlay", OVERLAYS)
SUFFIX = r"_(total|bucket|sum|count|created)$"


def settings_env(overlay: str) -> dict[str, str]:
    """Every INFERLINE_* variable the overlay sets: the ConfigMap and each container's env."""
    objects = rendered(overlay)
    env: dict[str, str] = dict(find(objects, "ConfigMap", "inferline-config")["data"])
    for workload in of_kind(objects, "Deployment"):
        for container in containers(workload):
            for entry in container.get("env", []):
                env[entry["name"]] = entry.get("value", "<from a reference>")
    return {k: v for k, v in env.items() if k.startswith("INFERLINE_")}


def test_every_setting_is_a_real_field(overlay: str) -> None:
    env = settings_env(overlay)
    fields = {f"INFERLINE_{name.upper()}" for name in Settings.model_fields}
    assert env and set(env) <= fields, sorted(set(env) - fields)


def test_configmap_values_parse_as_settings(overlay: str) -> None:
    data = find(rendered(overlay), "ConfigMap", "inferline-config")["data"]
    values: dict[str, Any] = {k.removeprefix("INFERLINE_").lower(): v for k, v in data.items()}
    Settings(**values)  # raises on a value the service would refuse at start


def test_stream_and_group_are_the_applications(overlay: str) -> None:
    objects = rendered(overlay)
    prefix = find(objects, "ConfigMap", "inferline-config")["data"]["INFERLINE_QUEUE_PREFIX"]
    assert prefix == Settings().queue_prefix
    keys = QueueKeys(Settings().queue_prefix)
    triggers = [
        t
        for so in of_kind(objects, "ScaledObject")
        for t in so["spec"]["triggers"]
        if t["type"] == "redis-streams"
    ]
    assert len(triggers) == 2
    for trigger in triggers:
        assert trigger["metadata"]["stream"] == keys.stream
        assert trigger["metadata"]["consumerGroup"] == keys.group


def test_metrics_in_queries_exist(overlay: str) -> None:
    rendered_metrics = Metrics().render().decode()
    exposed = set(re.findall(r"^# TYPE (\S+) ", rendered_metrics, re.MULTILINE))
    queries = [
        t["metadata"]["query"]
        for so in of_kind(rendered(overlay), "ScaledObject")
        for t in so["spec"]["triggers"]
        if t["type"] == "prometheus"
    ]
    assert queries
    for query in queries:
        names = set(re.findall(r"\binferline_[a-z0-9_]+", query))
        # A query names samples: a counter's is <family>_total, a histogram's _bucket etc.
        missing = {n for n in names if n not in exposed and re.sub(SUFFIX, "", n) not in exposed}
        assert names and not missing, (missing, sorted(exposed))
