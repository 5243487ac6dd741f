"""A small kustomize, enough to render ``deploy/k8s/overlays/*`` in the tests (the Go binary
is not installable here).

It supports what the manifests use: ``resources`` (files, and directories holding a
kustomization.yaml), ``namespace``, ``images`` (newName, newTag) and ``patches`` by path,
applied as strategic merge: maps merge, lists of maps with a ``name`` merge by name (as
containers, env and volumes do in Kubernetes' own merge keys), other lists are replaced. Any
other field in a kustomization.yaml is refused, so a manifest cannot rely on a feature that
this renderer would silently skip.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

Obj = dict[str, Any]
SUPPORTED = {"apiVersion", "kind", "namespace", "resources", "images", "patches"}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}


def load_documents(path: Path) -> list[Obj]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def render(directory: Path) -> list[Obj]:
    """The objects ``kustomize build directory`` would print, in resource order."""
    spec = load_documents(directory / "kustomization.yaml")[0]
    unknown = set(spec) - SUPPORTED
    if unknown:
        raise ValueError(f"{directory}: unsupported kustomization fields {sorted(unknown)}")
    objects: list[Obj] = []
    for entry in spec.get("resources", []):
        path = directory / entry
        objects += render(path) if path.is_dir() else load_documents(path)
    for patch in spec.get("patches", []):
        if set(patch) != {"path"}:
            raise ValueError(f"{directory}: only patches by path are supported: {patch}")
        for doc in load_documents(directory / patch["path"]):
            target = _find(objects, doc)
            objects[objects.index(target)] = merge(target, doc)
    for image in spec.get("images", []):
        for obj in objects:
            _set_image(obj, image)
    if "namespace" in spec:
        for obj in objects:
            if obj["kind"] in CLUSTER_SCOPED:
                if obj["kind"] == "Namespace":
                    obj["metadata"]["name"] = spec["namespace"]
            else:
                obj["metadata"]["namespace"] = spec["namespace"]
    return objects


def merge(base: Any, patch: Any) -> Any:
    """Strategic merge of ``patch`` into a copy of ``base``."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = copy.deepcopy(base)
        for key, value in patch.items():
            out[key] = merge(base[key], value) if key in base else copy.deepcopy(value)
        return out
    if isinstance(base, list) and isinstance(patch, list) and _named(base) and _named(patch):
        merged = [copy.deepcopy(item) for item in base]
        names = [item["name"] for item in merged]
        for item in patch:
            if item["name"] in names:
                i = names.index(item["name"])
                merged[i] = merge(merged[i], item)
            else:
                merged.append(copy.deepcopy(item))
        return merged
    return copy.deepcopy(patch)


def _named(items: list[Any]) -> bool:
    return all(isinstance(item, dict) and "name" in item for item in items)


def _find(objects: list[Obj], patch: Obj) -> Obj:
    key = (patch["apiVersion"], patch["kind"], patch["metadata"]["name"])
    for obj in objects:
        if (obj["apiVersion"], obj["kind"], obj["metadata"]["name"]) == key:
            return obj
    raise ValueError(f"patch target not found: {key}")


def pod_spec(obj: Obj) -> Obj | None:
    """The pod template's spec of a workload, or None for other kinds."""
    if obj["kind"] in {"Deployment", "StatefulSet", "DaemonSet", "Job"}:
        spec: Obj = obj["spec"]["template"]["spec"]
        return spec
    return None


def containers(obj: Obj) -> list[Obj]:
    spec = pod_spec(obj)
    if spec is None:
        return []
    return [*spec.get("initContainers", []), *spec["containers"]]


def _set_image(obj: Obj, image: Obj) -> None:
    for container in containers(obj):
        name, _, tag = container["image"].partition(":")
        if name == image["name"]:
            container["image"] = f"{image.get('newName', name)}:{image.get('newTag', tag)}"
