"""The committed sentiment model: small, loadable, and as good as its recorded figures."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from inferline.modelrepo.build import asset
from inferline.modelrepo.evaluate import load_examples, model_scores, vader_scores
from tests.conftest import model_dir

ROOT = Path(__file__).resolve().parents[2]


def data_dir() -> Path:
    path = Path(os.environ.get("INFERLINE_DATA_DIR", ROOT.parent / "shared" / "data" / "sentiment"))
    if not path.is_dir():
        pytest.fail(f"no sentiment data at {path}; set INFERLINE_DATA_DIR")
    return path


def test_committed_artifacts_are_small() -> None:
    folder = asset("sentiment_adapter.safetensors").parent
    total = sum(p.stat().st_size for p in folder.iterdir())
    assert total < 25 * 1024 * 1024


def test_served_model_reproduces_its_recorded_figures() -> None:
    recorded = json.loads(asset("sentiment_metrics.json").read_text())
    examples = load_examples(data_dir() / "amazon_reviews.jsonl", validation_only=True)
    model = model_scores(examples, model_dir()).as_dict()
    vader = vader_scores(examples).as_dict()
    assert model == recorded["model"]
    assert vader == recorded["vader"]
    # The targets of the model-quality issue, on the validation split.
    assert model["polar_accuracy"] >= 0.88  # type: ignore[operator]
    assert model["macro_f1"] >= 0.70  # type: ignore[operator]
    assert model["polar_accuracy"] >= vader["polar_accuracy"] + 0.10  # type: ignore[operator]
    assert model["macro_f1"] >= vader["macro_f1"] + 0.10  # type: ignore[operator]
