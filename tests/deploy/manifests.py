"""Where the deployment files are, and the rendered overlays (rendered once per session)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from tests.deploy.kustomize import Obj, render

REPO = Path(__file__).resolve().parents[2]
# CI clones the repository next to a `shared` directory (DESIGN.md: ../shared/schemas/keda).
SHARED = REPO.parent / "shared"
K8S = REPO / "deploy" / "k8s"
DOCKER = REPO / "deploy" / "docker"
OVERLAYS = sorted(p.name for p in (K8S / "overlays").iterdir() if p.is_dir())


@functools.cache
def rendered(overlay: str) -> tuple[Obj, ...]:
    return tuple(render(K8S / "overlays" / overlay))


def find(objects: tuple[Obj, ...], kind: str, name: str) -> Obj:
    for obj in objects:
        if obj["kind"] == kind and obj["metadata"]["name"] == name:
            return obj
    raise AssertionError(f"no {kind} {name}")


def of_kind(objects: tuple[Obj, ...], kind: str) -> list[Obj]:
    return [obj for obj in objects if obj["kind"] == kind]


def walk(value: Any) -> list[Any]:
    """Every node of a YAML tree (for searches such as 'every env entry')."""
    out = [value]
    if isinstance(value, dict):
        for child in value.values():
            out += walk(child)
    elif isinstance(value, list):
        for child in value:
            out += walk(child)
    return out
