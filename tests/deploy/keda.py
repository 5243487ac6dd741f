"""KEDA's CRD schemas (../shared/schemas/keda) and the trigger keys its scaler docs list."""

from __future__ import annotations

import functools
from typing import Any

import yaml

from tests.deploy.manifests import SHARED

SCHEMAS = SHARED / "schemas" / "keda"
# The metadata keys documented for each scaler we use (keda.sh/docs/<version>/scalers/...).
DOCUMENTED_KEYS = {
    "redis-streams": {
        "address",
        "host",
        "port",
        "addressFromEnv",
        "hostFromEnv",
        "portFromEnv",
        "usernameFromEnv",
        "passwordFromEnv",
        "stream",
        "consumerGroup",
        "pendingEntriesCount",
        "streamLength",
        "lagCount",
        "activationLagCount",
        "databaseIndex",
        "enableTLS",
        "unsafeSsl",
    },
    "prometheus": {
        "serverAddress",
        "query",
        "queryParameters",
        "threshold",
        "activationThreshold",
        "namespace",
        "customHeaders",
        "ignoreNullValues",
        "unsafeSsl",
        "timeout",
        "authModes",
    },
}


@functools.cache
def crd_schema(kind: str, version: str) -> dict[str, Any]:
    """The openAPIV3Schema of ``kind`` (ScaledObject, TriggerAuthentication) at ``version``."""
    for path in sorted(SCHEMAS.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        if crd["spec"]["names"]["kind"] != kind:
            continue
        for served in crd["spec"]["versions"]:
            if served["name"] == version:
                schema: dict[str, Any] = served["schema"]["openAPIV3Schema"]
                return schema
    raise LookupError(f"no CRD schema for {kind} {version} in {SCHEMAS}")


def unknown_fields(schema: dict[str, Any], value: Any, path: str = "") -> list[str]:
    """Fields the schema does not declare. The API server prunes them silently from custom
    resources, so a misspelt ``pollingIntervall`` would otherwise pass and do nothing."""
    found: list[str] = []
    if isinstance(value, dict) and "properties" in schema:
        if schema.get("x-kubernetes-preserve-unknown-fields"):
            return found
        for key, child in value.items():
            if key not in schema["properties"]:
                found.append(f"{path}.{key}")
            else:
                found += unknown_fields(schema["properties"][key], child, f"{path}.{key}")
    elif isinstance(value, list) and "items" in schema:
        for i, child in enumerate(value):
            found += unknown_fields(schema["items"], child, f"{path}[{i}]")
    return found
