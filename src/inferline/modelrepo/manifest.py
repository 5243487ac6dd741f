"""The manifest of a model directory: what each file is, and a checksum of each."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from inferline.config import describe
from inferline.errors import ModelBuildError

MANIFEST = "manifest.json"


class GraphSpec(BaseModel):
    """One exported model: its files per precision, and its output."""

    model_config = ConfigDict(frozen=True)

    files: dict[str, str]  # precision -> file name
    output: str
    output_dim: int
    packed_output: str | None = None  # the same, for packed rows (engines/packing.py)


class Manifest(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    version: str
    max_tokens: int
    embedding_dim: int
    inputs: list[str]
    labels: list[str]
    tokenizer: str
    models: dict[str, GraphSpec]
    files: dict[str, str]  # file name -> sha256
    fingerprint: str  # what the build was made from; a change means rebuild

    @classmethod
    def load(cls, model_dir: Path) -> Manifest:
        path = model_dir / MANIFEST
        try:
            return cls.model_validate_json(path.read_bytes())
        except FileNotFoundError:
            raise FileNotFoundError(
                f"no model at {model_dir}: run `inferline model build` first"
            ) from None
        except ValidationError as exc:  # else read as a mistake in the settings
            raise ModelBuildError(
                f"{path} is not a valid manifest ({describe(exc)}): rebuild with "
                "`inferline model build --force`"
            ) from None

    def save(self, model_dir: Path) -> None:
        text = json.dumps(self.model_dump(), indent=2, sort_keys=True)
        (model_dir / MANIFEST).write_text(text + "\n", encoding="utf-8")

    def problems(self, model_dir: Path) -> list[str]:
        """Files missing or not matching their checksum (empty when the directory is whole)."""
        found = []
        for name, digest in self.files.items():
            path = model_dir / name
            if not path.is_file():
                found.append(f"{name} is missing")
            elif sha256_file(path) != digest:
                found.append(f"{name} does not match its checksum")
        return found


def packed_name(output: str) -> str:
    """The name of an output's packed form in an exported graph."""
    return f"{output}_packed"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
