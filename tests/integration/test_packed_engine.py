"""The real graphs give a text the same output whether it is padded alone or shares a row
with others (engines/packing.py, modelrepo/torchmodel.Encoder)."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from inferline.engines.onnx import OnnxEngine
from inferline.modelrepo.manifest import Manifest
from inferline.tokenizer import TextEncoder
from tests.conftest import model_dir

TEXTS = [
    "great gadget i bought this last week.",
    "the volume level of the phone is not all that good.",
    "it sure does!",
    "value for money.",
    "i had no problems setting up the software and getting my favorite cd's transferred.",
    "it was not my first choice.",
    "buy this instead of an ipod.",
    "construction quality is a difficult item, and the manual is long and repetitive.",
]


def engine(model: str, precision: str, pack_width: int, name: str = "t") -> OnnxEngine:
    manifest = Manifest.load(model_dir())
    graph = manifest.models[model]
    return OnnxEngine(
        model_dir() / graph.files[precision],
        name=name,
        output=graph.output,
        output_dim=graph.output_dim,
        max_tokens=manifest.max_tokens,
        lanes=2,
        packed_output=graph.packed_output,
        pack_width=pack_width,
    )


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    return TextEncoder(model_dir() / "tokenizer.json", 256)


def test_packed_rows_give_each_text_its_own_embedding(encoder: TextEncoder) -> None:
    items = encoder.encode(TEXTS)
    packed = engine("embedding", "fp32", 48)
    alone = engine("embedding", "fp32", 0)
    got = np.stack(packed.run_sync(items))
    want = np.stack([alone.run_sync([item])[0] for item in items])
    assert got.shape == (len(TEXTS), 384)
    assert (got * want).sum(1).min() >= 0.9999


def test_the_packed_batch_shares_rows(encoder: TextEncoder) -> None:
    from inferline.engines.packing import pack_batch

    ids, _, _, _ = pack_batch(encoder.encode(TEXTS), 48)
    assert ids.shape[0] < len(TEXTS)  # else the test above would not test packing


def test_int8_sentiment_packed_matches_padded(encoder: TextEncoder) -> None:
    items = encoder.encode(TEXTS)
    packed = np.stack(engine("sentiment", "int8", 48).run_sync(items))
    padded = np.stack(engine("sentiment", "int8", 0).run_sync(items))
    assert np.allclose(packed.sum(1), 1.0, atol=1e-5)
    assert np.abs(packed - padded).mean() <= 0.05
    assert (packed.argmax(1) == padded.argmax(1)).mean() >= 0.85


def test_the_lanes_start_with_the_engine() -> None:
    """They inherit the creating thread's floating-point mode, denormals-as-zero included,
    which ONNX Runtime sets there; threads started later from the event loop would not."""
    started = engine("sentiment", "int8", 48, name="lanes-check")
    names = [t.name for t in threading.enumerate() if t.name.startswith("onnx-lanes-check")]
    asyncio.run(started.close())
    assert len(names) == 2
