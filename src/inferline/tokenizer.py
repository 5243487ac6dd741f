"""Batch tokenisation with the model's own ``tokenizer.json``, truncating at its limit."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from inferline.types import Item


class TextEncoder:
    """Turns texts into :class:`Item` s. Thread-safe; tokenising releases the GIL.

    The server sets TOKENIZERS_PARALLELISM=false: with the cores busy running the model, the
    rayon pool only adds a wait (measured at several times the tokenising itself).
    """

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
        # The fast variant skips character offsets, which nothing here uses (~25% less time).
        encodings = self._tok.encode_batch_fast(list(texts), add_special_tokens=True)
        limit = self.max_tokens
        items = []
        # Items keep their text (a reference, no copy) for remote engines, which send text.
        for text, enc in zip(texts, encodings, strict=True):
            ids = np.asarray(enc.ids, dtype=np.int64)
            if ids.shape[0] > limit:
                cut = np.concatenate((ids[: limit - 1], self._sep))
                items.append(Item(cut, truncated=True, text=text))
            else:
                items.append(Item(ids, text=text))
        return items
