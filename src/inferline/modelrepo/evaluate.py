"""``inferline model eval``: score the served sentiment model, and VADER beside it.

Runs the ONNX graph that the service runs (no torch). Figures:
- positive/negative accuracy: on items rated Positive or Negative, is the predicted score
  (P(Positive) - P(Negative); VADER's compound) strictly on the right side of zero;
- 3-class macro-F1 (VADER: compound >= 0.05 Positive, <= -0.05 Negative, else Neutral);
- the confusion matrix (rows: true label; columns: predicted).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from inferline.modelrepo.data import LABELS, Example, is_validation, load_file
from inferline.modelrepo.manifest import Manifest

IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Scores:
    polar_accuracy: float
    macro_f1: float
    confusion: list[list[int]]
    n: int
    polar_n: int

    def as_dict(self) -> dict[str, object]:
        polar = self.polar_accuracy  # NaN without polar rows: null, not JSON's missing NaN
        return {
            "polar_accuracy": round(polar, 4) if math.isfinite(polar) else None,
            "macro_f1": round(self.macro_f1, 4),
            "confusion": self.confusion,
            "n": self.n,
            "polar_n": self.polar_n,
        }


def score(gold: IntArray, predicted: IntArray, polarity: npt.NDArray[np.float64]) -> Scores:
    polar = gold != 1
    # A score of exactly zero (VADER's compound for a sentence with no lexicon word) is on
    # neither side, so it counts as wrong.
    polar_ok = np.where(gold[polar] == 2, polarity[polar] > 0, polarity[polar] < 0)
    confusion = np.zeros((3, 3), dtype=np.int64)
    np.add.at(confusion, (gold, predicted), 1)
    f1s = []
    for c in range(3):
        tp = confusion[c, c]
        fp = confusion[:, c].sum() - tp
        fn = confusion[c, :].sum() - tp
        f1s.append(2 * tp / max(2 * tp + fp + fn, 1))
    return Scores(
        polar_accuracy=float(polar_ok.mean()) if polar.any() else float("nan"),
        macro_f1=float(np.mean(f1s)),
        confusion=confusion.tolist(),
        n=len(gold),
        polar_n=int(polar.sum()),
    )


def model_scores(examples: Sequence[Example], model_dir: Path, precision: str = "int8") -> Scores:
    from inferline.config import PACK_WIDTH
    from inferline.engines.onnx import OnnxEngine
    from inferline.tokenizer import TextEncoder

    manifest = Manifest.load(model_dir)
    spec = manifest.models["sentiment"]
    engine = OnnxEngine(
        model_dir / spec.files[precision],
        name="sentiment",
        output=spec.output,
        output_dim=spec.output_dim,
        max_tokens=manifest.max_tokens,
        packed_output=spec.packed_output,  # as served: short texts share rows
        pack_width=PACK_WIDTH,
    )
    encoder = TextEncoder(model_dir / manifest.tokenizer, manifest.max_tokens)
    items = encoder.encode([e.text for e in examples])
    order = sorted(range(len(items)), key=lambda i: items[i].tokens)
    probs = np.zeros((len(items), 3), dtype=np.float32)
    for start in range(0, len(order), 16):
        idx = order[start : start + 16]
        probs[idx] = np.stack(engine.run_sync([items[i] for i in idx]))
    gold = np.array([e.label for e in examples])
    return score(gold, probs.argmax(1), (probs[:, 2] - probs[:, 0]).astype(np.float64))


def vader_scores(examples: Sequence[Example]) -> Scores:
    try:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
    except ImportError as exc:
        raise ImportError("VADER figures need the package vaderSentiment") from exc
    analyzer = SentimentIntensityAnalyzer()
    compound = np.array([analyzer.polarity_scores(e.text)["compound"] for e in examples])
    predicted = np.where(compound >= 0.05, 2, np.where(compound <= -0.05, 0, 1))
    gold = np.array([e.label for e in examples])
    return score(gold, predicted, compound)


def load_examples(path: Path, validation_only: bool) -> list[Example]:
    examples = load_file(path)
    if validation_only:
        examples = [e for e in examples if is_validation(e.source, e.id)]
    if not examples:
        raise ValueError(f"no examples in {path}")
    return examples


def report(path: Path, model: Scores, vader: Scores) -> str:
    lines = [
        f"{path.name}: {model.n} sentences, {model.polar_n} positive or negative",
        "",
        f"{'':28}{'inferline':>12}{'VADER':>12}",
        f"{'positive/negative accuracy':28}"
        f"{model.polar_accuracy:>12.4f}{vader.polar_accuracy:>12.4f}",
        f"{'3-class macro-F1':28}{model.macro_f1:>12.4f}{vader.macro_f1:>12.4f}",
        "",
    ]
    for name, s in (("inferline", model), ("VADER", vader)):
        lines.append(f"confusion matrix, {name} (rows: true, columns: predicted)")
        lines.append(f"{'':>10}" + "".join(f"{label:>10}" for label in LABELS))
        for label, row in zip(LABELS, s.confusion, strict=True):
            lines.append(f"{label:>10}" + "".join(f"{v:>10}" for v in row))
        lines.append("")
    return "\n".join(lines)


def evaluate(path: Path, model_dir: Path, *, validation_only: bool, as_json: bool) -> str:
    examples = load_examples(path, validation_only)
    model, vader = model_scores(examples, model_dir), vader_scores(examples)
    if as_json:
        return json.dumps({"model": model.as_dict(), "vader": vader.as_dict()}, indent=2)
    return report(path, model, vader)
