"""How much the served int8 graphs differ from fp32, and from themselves in other batches.

Dynamic int8 quantises activations with one scale per model call, so a text's result
depends on which texts shared its call. This measures that on review texts, through the
real service (batcher, packing, engines), in-process:

    python -m bench.fidelity [--texts 320] [--batch 16]

For each configuration every text runs alone (its own call) and in requests of ``--batch``
texts (the batcher groups them as it would any request). Printed as a markdown table, for
docs/model-card.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
from collections.abc import Sequence
from typing import Any

import numpy as np

from bench.common import DEFAULT_DATA
from inferline.config import Settings
from inferline.service import Service

FloatArray = np.ndarray[Any, np.dtype[np.float64]]
CONFIGS: dict[str, dict[str, Any]] = {
    "fp32": {"precision": "fp32"},
    "int8 (packed rows, the default)": {"precision": "int8"},
    "int8, padded batches": {"precision": "int8", "pack_width": 0},
}


async def collect(
    overrides: dict[str, Any], texts: Sequence[str], batch: int
) -> dict[str, FloatArray]:
    service = Service(Settings(lanes=1, **overrides))
    await service.start()
    try:
        out: dict[str, FloatArray] = {}
        for model, key in (("embedding", "embedding"), ("sentiment", "probabilities")):
            alone = [(await service.results(model, [t]))[0][key] for t in texts]
            grouped = []
            for i in range(0, len(texts), batch):
                grouped += [r[key] for r in await service.results(model, texts[i : i + batch])]
            out[f"{model} alone"] = np.array([_vector(v) for v in alone], dtype=np.float64)
            out[f"{model} batched"] = np.array([_vector(v) for v in grouped], dtype=np.float64)
        return out
    finally:
        await service.close(1)


def _vector(value: Any) -> list[float]:
    return list(value.values()) if isinstance(value, dict) else [float(x) for x in value]


def cosine(a: FloatArray, b: FloatArray) -> FloatArray:
    norms: FloatArray = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.asarray((a * b).sum(1) / norms, dtype=np.float64)


def row(name: str, cos: FloatArray, probs: FloatArray, flips: int) -> str:
    return (
        f"| {name} | {np.median(cos):.4f} | {np.percentile(cos, 1):.4f} | {cos.min():.4f} "
        f"| {np.median(probs):.4f} | {np.percentile(probs, 99):.3f} | {probs.max():.3f} "
        f"| {flips} |"
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--texts", type=int, default=320, help="review texts, sampled at random")
    parser.add_argument("--batch", type=int, default=16, help="texts per batched request")
    args = parser.parse_args(argv)
    lines = DEFAULT_DATA.read_text().splitlines()
    texts = random.Random(1).sample([json.loads(line)["text"] for line in lines], args.texts)
    runs = {name: asyncio.run(collect(o, texts, args.batch)) for name, o in CONFIGS.items()}
    ref = runs["fp32"]
    print(f"{args.texts} review texts; batched: requests of {args.batch}.\n")
    print(
        "| what | embedding cosine, median | 1st percentile | min "
        "| sentiment, largest probability change: median | 99th percentile | max "
        "| labels changed |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, run in runs.items():
        pairs = [("alone", run, "batched", "alone against itself batched")]
        if name != "fp32":
            pairs = [
                ("alone", ref, "alone", "alone against fp32"),
                ("batched", ref, "alone", "batched against fp32"),
                *pairs,
            ]
        for mine, other, theirs, label in pairs:
            cos = cosine(run[f"embedding {mine}"], other[f"embedding {theirs}"])
            a, b = run[f"sentiment {mine}"], other[f"sentiment {theirs}"]
            flips = int((a.argmax(1) != b.argmax(1)).sum())
            print(row(f"{name}: {label}", cos, np.abs(a - b).max(1), flips))


if __name__ == "__main__":
    main()
