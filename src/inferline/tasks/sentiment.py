"""Sentiment: three classes from logits; score is P(Positive) - P(Negative)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from inferline.types import FloatArray, Item


class SentimentTask:
    name = "sentiment"

    def __init__(self, labels: Sequence[str]) -> None:
        self.labels = list(labels)
        self._neg = self.labels.index("Negative")
        self._pos = self.labels.index("Positive")

    def probabilities(self, logits: FloatArray) -> FloatArray:
        e = np.exp(logits - logits.max())
        probs: FloatArray = (e / e.sum()).astype(np.float32)
        return probs

    def result(self, row: FloatArray, item: Item) -> dict[str, Any]:
        p = self.probabilities(row)
        best = int(p.argmax())
        return {
            "label": self.labels[best],
            "score": round(float(p[self._pos] - p[self._neg]), 6),
            "probabilities": {
                name: round(float(v), 6) for name, v in zip(self.labels, p, strict=True)
            },
            "truncated": item.truncated,
        }
