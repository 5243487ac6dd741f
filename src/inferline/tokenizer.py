"""Batch tokenisation with the model's own ``tokenizer.json``, truncating at its limit."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from inferline.types import Item

SERIAL_MAX = 64


class TextEncoder:
    """Turns texts into :class:`Item` s. Thread-safe; encode_batch releases the GIL."""

    def __init__(self, path: Path, max_tokens: int) -> None:
        self._tok = Tokenizer.from_file(str(path))
        # tokenizer.json ships with padding and truncation at 128; the batcher pads, and we
        # truncate ourselves so that the response can say which texts were cut.
        self._tok.no_padding()
        self._tok.no_truncation()
        self.max_tokens = max_tokens
        sep = self._tok.token_to_id("[SEP]")
        self._sep = np.array([sep if sep is not None else 102], dtype=np.int64)

    def encode(self, texts: Sequence[str]) -> list[Item]:
        if len(texts) <= SERIAL_MAX:
            # encode_batch hands work to a rayon pool and waits for it; when the cores are
            # busy running the model, that wait costs several times the tokenising itself.
            encodings = [self._tok.encode(t, add_special_tokens=True) for t in texts]
        else:
            encodings = self._tok.encode_batch(list(texts), add_special_tokens=True)
        limit = self.max_tokens
        items = []
        for enc in encodings:
            ids = np.asarray(enc.ids, dtype=np.int64)
            if ids.shape[0] > limit:
                items.append(Item(np.concatenate((ids[: limit - 1], self._sep)), truncated=True))
            else:
                items.append(Item(ids))
        return items

    def count(self, texts: Sequence[str]) -> list[int]:
        """Token counts before truncation (for usage reporting)."""
        return [len(e.ids) for e in self._tok.encode_batch(list(texts), add_special_tokens=True)]
