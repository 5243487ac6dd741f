"""Embedding: the pooled, L2-normalised sentence vector (pooling runs inside the graph)."""

from __future__ import annotations

from typing import Any

from inferline.types import FloatArray, Item


class EmbeddingTask:
    name = "embedding"

    def result(self, row: FloatArray, item: Item) -> dict[str, Any]:
        return {"embedding": row, "truncated": item.truncated}
