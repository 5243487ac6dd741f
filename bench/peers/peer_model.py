"""The model that every peer serves: inferline's int8 sentiment graph and its tokenizer.json.

Nothing of inferline is imported: each peer runs in its own virtual environment under
bench/.venvs/ with only its framework, onnxruntime, tokenizers and numpy. The graph file is
the one that inferline serves for model ``sentiment`` at precision ``int8`` (the manifest's
``models.sentiment.files.int8``), and its output already holds the class probabilities
(the softmax is part of the graph), so a peer does what inferline does: tokenise with
truncation at the manifest's ``max_tokens``, pad to the longest text of the batch, run.

Settings come from the environment that bench/systems.py sets:
``PEER_PORT``, ``PEER_MODEL_DIR`` (else ``INFERLINE_MODEL_DIR``, else inferline's default)
and ``PEER_THREADS`` (ONNX Runtime intra-op threads; each app names its default).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

DEFAULT_DIR = Path.home() / ".cache" / "inferline" / "models" / "all-MiniLM-L6-v2"


def model_dir() -> Path:
    chosen = os.environ.get("PEER_MODEL_DIR") or os.environ.get("INFERLINE_MODEL_DIR")
    return Path(chosen) if chosen else DEFAULT_DIR


def port() -> int:
    return int(os.environ.get("PEER_PORT", "8000"))


def threads(default: int) -> int:
    return int(os.environ.get("PEER_THREADS", default))


def parse(body: Any) -> tuple[list[str], bool]:
    """``{"text": str}`` -> ([text], True); ``{"texts": [str, ...]}`` -> (texts, False)."""
    if isinstance(body, dict):
        if isinstance(body.get("text"), str):
            return [body["text"]], True
        texts = body.get("texts")
        if isinstance(texts, list) and texts and all(isinstance(t, str) for t in texts):
            return texts, False
    raise ValueError('expected {"text": str} or {"texts": [str, ...]}')


def respond(results: list[dict[str, Any]], single: bool) -> dict[str, Any]:
    return results[0] if single else {"results": results}


class SentimentModel:
    def __init__(self, threads: int, directory: Path | None = None) -> None:
        directory = directory or model_dir()
        manifest = json.loads((directory / "manifest.json").read_text())
        spec = manifest["models"]["sentiment"]
        self.labels: list[str] = manifest["labels"]
        self._neg = self.labels.index("Negative")
        self._pos = self.labels.index("Positive")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        self.session = ort.InferenceSession(
            str(directory / spec["files"]["int8"]), options, providers=["CPUExecutionProvider"]
        )
        self.output = spec["output"]
        self.tokenizer = Tokenizer.from_file(str(directory / manifest["tokenizer"]))
        self.tokenizer.enable_truncation(manifest["max_tokens"])
        self.tokenizer.enable_padding()  # to the longest text of the batch

    def probabilities(self, texts: Sequence[str]) -> np.ndarray:
        encodings = self.tokenizer.encode_batch_fast(list(texts))
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        (probs,) = self.session.run([self.output], {"input_ids": ids, "attention_mask": mask})
        return np.asarray(probs, dtype=np.float32)

    def results(self, probs: np.ndarray) -> list[dict[str, Any]]:
        return [
            {
                "label": self.labels[int(row.argmax())],
                "score": float(row[self._pos] - row[self._neg]),
                "probabilities": dict(zip(self.labels, row.tolist(), strict=True)),
            }
            for row in probs
        ]

    def predict(self, texts: Sequence[str]) -> list[dict[str, Any]]:
        return self.results(self.probabilities(texts))


def split(flat: list[Any], sizes: Sequence[int]) -> list[list[Any]]:
    """Cut ``flat`` back into consecutive pieces of ``sizes``."""
    out, start = [], 0
    for n in sizes:
        out.append(flat[start : start + n])
        start += n
    return out
