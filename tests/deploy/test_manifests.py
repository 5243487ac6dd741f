"""The rendered overlays against the Kubernetes and KEDA schemas, and the rules the service
needs from them (probes, drain timing, scaling, wiring)."""

from __future__ import annotations

import re
from typing import Any

import jsonschema
import kubernetes_validate
import pytest

from tests.deploy.keda import DOCUMENTED_KEYS, crd_schema, unknown_fields
from tests.deploy.kustomize import Obj, containers, pod_spec
from tests.deploy.manifests import OVERLAYS, SHARED, find, of_kind, rendered, walk

KUBERNETES_VERSION = "1.31.0"  # the oldest release we support; schemas are strict
pytestmark = pytest.mark.parametrize("overlay", OVERLAYS)


def api_container(objects: tuple[Obj, ...]) -> Obj:
    return containers(find(objects, "Deployment", "inferline-api"))[0]


def config(objects: tuple[Obj, ...]) -> dict[str, str]:
    data: dict[str, str] = find(objects, "ConfigMap", "inferline-config")["data"]
    return data


def test_overlays_exist(overlay: str) -> None:
    assert set(OVERLAYS) == {"cpu", "gpu"}
    assert len(rendered(overlay)) >= 12


def test_builtin_kinds_validate(overlay: str) -> None:
    builtin = [o for o in rendered(overlay) if not o["apiVersion"].startswith("keda.sh/")]
    assert {"Deployment", "Service", "StatefulSet", "PodDisruptionBudget", "ConfigMap"} <= {
        o["kind"] for o in builtin
    }
    for obj in builtin:
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            name = f"{obj['kind']}/{obj['metadata']['name']}"
            pytest.fail(f"{name}: {'.'.join(map(str, exc.path))}: {exc.message}")


def test_keda_objects_validate_against_the_crds(overlay: str) -> None:
    assert SHARED.is_dir(), f"{SHARED} is missing: CI clones the repo next to `shared`"
    keda = [o for o in rendered(overlay) if o["apiVersion"].startswith("keda.sh/")]
    assert {o["kind"] for o in keda} == {"ScaledObject", "TriggerAuthentication"}
    for obj in keda:
        schema = crd_schema(obj["kind"], obj["apiVersion"].split("/")[1])
        jsonschema.Draft202012Validator(schema).validate(obj)
        assert unknown_fields(schema["properties"]["spec"], obj["spec"], "spec") == []


def test_trigger_metadata_is_documented_strings(overlay: str) -> None:
    triggers = [
        t for so in of_kind(rendered(overlay), "ScaledObject") for t in so["spec"]["triggers"]
    ]
    assert {t["type"] for t in triggers} == {"redis-streams", "prometheus"}
    for trigger in triggers:
        metadata: dict[str, Any] = trigger["metadata"]
        # KEDA reads metadata as map[string]string; a YAML number or boolean is refused.
        assert all(isinstance(v, str) for v in metadata.values()), metadata
        assert set(metadata) <= DOCUMENTED_KEYS[trigger["type"]], metadata


def test_worker_scales_on_lag_and_pending(overlay: str) -> None:
    objects = rendered(overlay)
    scaled = find(objects, "ScaledObject", "inferline-worker")["spec"]
    find(objects, "Deployment", scaled["scaleTargetRef"]["name"])
    assert scaled["minReplicaCount"] == 0 < scaled["maxReplicaCount"]
    assert scaled["pollingInterval"] <= 10 and scaled["cooldownPeriod"] >= 60
    lag, pending = scaled["triggers"]
    assert {"lagCount", "activationLagCount"} <= set(lag["metadata"])
    assert "pendingEntriesCount" in pending["metadata"]
    assert not {"lagCount", "streamLength"} & set(pending["metadata"])
    for trigger in (lag, pending):
        auth = find(objects, "TriggerAuthentication", trigger["authenticationRef"]["name"])
        assert [r["parameter"] for r in auth["spec"]["secretTargetRef"]] == ["password"]
        # KEDA's operator runs in its own namespace: the address must be fully qualified.
        service = find(objects, "Service", "inferline-redis")
        port = service["spec"]["ports"][0]["port"]
        namespace = service["metadata"]["namespace"]
        expected = f"inferline-redis.{namespace}.svc.cluster.local:{port}"
        assert trigger["metadata"]["address"] == expected


def test_api_scales_on_prometheus_and_never_to_zero(overlay: str) -> None:
    objects = rendered(overlay)
    scaled = find(objects, "ScaledObject", "inferline-api")["spec"]
    find(objects, "Deployment", scaled["scaleTargetRef"]["name"])
    assert scaled["minReplicaCount"] >= 1
    assert [t["type"] for t in scaled["triggers"]] == ["prometheus"]
    # Two replicas at least, so the PDB's minAvailable leaves room for a drain.
    pdb = find(objects, "PodDisruptionBudget", "inferline-api")["spec"]
    assert scaled["minReplicaCount"] > pdb["minAvailable"]


def test_keda_owns_the_replica_counts_and_the_api_spreads_over_nodes(overlay: str) -> None:
    """A replicas field would be written back over the autoscaler's count by each apply."""
    objects = rendered(overlay)
    scaled = [o for o in objects if o["kind"] == "ScaledObject"]
    assert len(scaled) == 2  # the API and the workers
    for target in (
        find(objects, "Deployment", o["spec"]["scaleTargetRef"]["name"]) for o in scaled
    ):
        assert "replicas" not in target["spec"], target["metadata"]["name"]
    api = find(objects, "Deployment", "inferline-api")["spec"]["template"]["spec"]
    (spread,) = api["topologySpreadConstraints"]
    assert spread["topologyKey"] == "kubernetes.io/hostname"


def test_probes_and_drain_timing(overlay: str) -> None:
    objects = rendered(overlay)
    container = api_container(objects)
    assert container["startupProbe"]["httpGet"]["path"] == "/health/live"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    sleep = container["lifecycle"]["preStop"]["exec"]["command"]
    assert sleep[0] == "sleep"
    grace = float(config(objects)["INFERLINE_SHUTDOWN_GRACE_S"])
    api = pod_spec(find(objects, "Deployment", "inferline-api"))
    worker = pod_spec(find(objects, "Deployment", "inferline-worker"))
    assert api is not None and worker is not None
    # preStop, then the app's own drain, then a margin to exit before SIGKILL.
    assert api["terminationGracePeriodSeconds"] >= float(sleep[1]) + grace + 5
    assert worker["terminationGracePeriodSeconds"] >= grace + 5
    # The worker's probes go to its own port (queue/health.py), the one it is told to use.
    (worker_container,) = worker["containers"]
    ports = {p["name"]: p["containerPort"] for p in worker_container["ports"]}
    assert ports == {"metrics": int(config(objects)["INFERLINE_WORKER_METRICS_PORT"])}
    for probe, path in (("livenessProbe", "/health/live"), ("readinessProbe", "/health/ready")):
        assert worker_container[probe]["httpGet"] == {"path": path, "port": "metrics"}


def test_service_and_pdb_select_the_api(overlay: str) -> None:
    objects = rendered(overlay)
    deployment = find(objects, "Deployment", "inferline-api")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    service = find(objects, "Service", "inferline")
    pdb = find(objects, "PodDisruptionBudget", "inferline-api")
    for selector in (service["spec"]["selector"], pdb["spec"]["selector"]["matchLabels"]):
        assert selector.items() <= labels.items()
    ports = {p["name"]: p["containerPort"] for p in api_container(objects)["ports"]}
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == {"http": 8000, "grpc": 8001}
    assert ports == {"http": int(config(objects)["INFERLINE_PORT"]), "grpc": 8001}
    assert all(p["targetPort"] in ports for p in service["spec"]["ports"])


def test_pods_are_locked_down(overlay: str) -> None:
    for workload in of_kind(rendered(overlay), "Deployment") + of_kind(
        rendered(overlay), "StatefulSet"
    ):
        spec = pod_spec(workload)
        assert spec is not None and spec["securityContext"]["runAsNonRoot"] is True
        for container in containers(workload):
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True
            assert security["allowPrivilegeEscalation"] is False
            assert "resources" in container and "limits" in container["resources"]


def test_references_resolve(overlay: str) -> None:
    objects = rendered(overlay)
    configmaps = {o["metadata"]["name"]: o.get("data", {}) for o in of_kind(objects, "ConfigMap")}
    secrets = {o["metadata"]["name"]: o.get("stringData", {}) for o in of_kind(objects, "Secret")}
    nodes = walk([o for o in objects if o["kind"] != "ConfigMap"])
    refs = [n for n in nodes if isinstance(n, dict)]
    checked = 0
    for node in refs:
        if "configMapRef" in node:
            assert node["configMapRef"]["name"] in configmaps
            checked += 1
        if "secretKeyRef" in node:
            assert node["secretKeyRef"]["key"] in secrets[node["secretKeyRef"]["name"]]
            checked += 1
        if "secretName" in node:
            assert node["secretName"] in secrets
            checked += 1
        if "parameter" in node:  # TriggerAuthentication secretTargetRef
            assert node["key"] in secrets[node["name"]]
            checked += 1
    assert checked >= 6


def test_redis_persists_with_aof(overlay: str) -> None:
    objects = rendered(overlay)
    redis = find(objects, "StatefulSet", "inferline-redis")
    args = containers(redis)[0]["args"]
    options = dict(zip(args[::2], args[1::2], strict=True))
    assert options["--appendonly"] == "yes"
    assert options["--maxmemory-policy"] == "noeviction"  # docs/queue.md
    assert options["--requirepass"] == "$(REDIS_PASSWORD)"
    mounts = {m["mountPath"]: m["name"] for m in containers(redis)[0]["volumeMounts"]}
    claims = [c["metadata"]["name"] for c in redis["spec"]["volumeClaimTemplates"]]
    assert mounts[options["--dir"]] in claims
    assert redis["spec"]["serviceName"] == "inferline-redis"
    # The pods' URL points at that Service and port.
    env = {e["name"]: e.get("value") for e in api_container(objects)["env"]}
    assert re.fullmatch(
        r"redis://:\$\(REDIS_PASSWORD\)@inferline-redis:6379/0", env["INFERLINE_REDIS_URL"]
    )


def test_gpu_overlay_requests_a_gpu_and_cpu_does_not(overlay: str) -> None:
    objects = rendered(overlay)
    for name in ("inferline-api", "inferline-worker"):
        deployment = find(objects, "Deployment", name)
        spec = pod_spec(deployment)
        assert spec is not None
        container = containers(deployment)[0]
        limits = container["resources"]["limits"]
        if overlay == "gpu":
            assert limits["nvidia.com/gpu"] == "1"
            assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
            assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec[
                "tolerations"
            ]
            assert container["image"].endswith("-gpu")
        else:
            assert "nvidia.com/gpu" not in limits and "nodeSelector" not in spec
            assert not container["image"].endswith("-gpu")
    assert config(objects)["INFERLINE_DEVICE"] == ("cuda" if overlay == "gpu" else "cpu")
