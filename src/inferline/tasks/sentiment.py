"""Sentiment: three classes; score is P(Positive) - P(Negative), in [-1, 1]."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from inferline.types import FloatArray, Item


class SentimentTask:
    name = "sentiment"

    def __init__(self, labels: Sequence[str]) -> None:
        self.labels = list(labels)
        self._neg = self.labels.index("Negative")
        self._pos = self.labels.index("Positive")

    def result(self, row: FloatArray, item: Item) -> dict[str, Any]:
        """``row`` holds the class probabilities: the softmax is part of the graph.

        Values stay float32 scalars, which orjson writes in their shortest form."""
        return {
            "label": self.labels[int(row.argmax())],
            "score": row[self._pos] - row[self._neg],
            "probabilities": dict(zip(self.labels, row, strict=True)),
            "truncated": item.truncated,
        }
