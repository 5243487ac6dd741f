"""Print pyproject.toml's requirements, with those of the extras named, one a line.

The images install these in layers of their own before the source is copied, so that a
change to src/ reuses them instead of installing torch and the rest again:

    python pyproject_deps.py build > build.txt
    python pyproject_deps.py gpu --drop onnxruntime > gpu.txt

``--drop NAME`` leaves out a requirement (the CUDA image swaps onnxruntime for
onnxruntime-gpu, which provides the same module). Standard library only: it runs before
anything is installed.
"""

from __future__ import annotations

import argparse
import re
import tomllib
from pathlib import Path


def name_of(requirement: str) -> str:
    """The distribution name, normalised (PEP 503)."""
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement.strip())
    if match is None:
        raise ValueError(f"not a requirement: {requirement!r}")
    return re.sub(r"[-_.]+", "-", match.group(0)).lower()


def requirements(pyproject: Path, extras: list[str], drop: list[str]) -> list[str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    optional = project.get("optional-dependencies", {})
    unknown = [e for e in extras if e not in optional]
    if unknown:
        raise SystemExit(f"no such extra in {pyproject}: {', '.join(unknown)}")
    found = list(project["dependencies"]) + [r for e in extras for r in optional[e]]
    dropped = {name_of(d) for d in drop}
    return [r for r in found if name_of(r) not in dropped]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("extras", nargs="*")
    parser.add_argument("--drop", action="append", default=[], metavar="NAME")
    parser.add_argument("--pyproject", type=Path, default=Path("pyproject.toml"))
    args = parser.parse_args(argv)
    print("\n".join(requirements(args.pyproject, args.extras, args.drop)))


if __name__ == "__main__":
    main()
