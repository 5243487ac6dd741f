"""Batch tokenisation with the model's own ``tokenizer.json``, truncating at its limit."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, normalizers

from inferline.errors import ModelBuildError
from inferline.types import Item
from inferline.wordpiece import AsciiWordPiece

# ASCII control characters that BertNormalizer's clean_text deletes (tab, newline and carriage
# return it turns into spaces, which the pre-tokenizer splits on just the same).
_DELETED_BY_CLEAN_TEXT = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


class TextEncoder:
    """Turns texts into :class:`Item` s. Thread-safe; tokenising releases the GIL.

    The server sets TOKENIZERS_PARALLELISM=false: with the cores busy running the model, the
    rayon pool only adds a wait (measured at several times the tokenising itself).
    """

    def __init__(self, path: Path, max_tokens: int) -> None:
        spec = path.read_text(encoding="utf-8")
        try:
            self._tok = _load(spec)
        except Exception as exc:  # the tokenizers library raises a bare Exception
            raise ModelBuildError(f"{path} is not a valid tokenizer ({exc})") from None
        # BERT's normaliser decomposes every character (NFD, for accents) even in plain
        # ASCII, about 40% of the tokenising time. ASCII texts take a copy that only
        # lowercases, which gives the same ids (tests/unit/test_tokenizer.py proves it).
        self._ascii: Tokenizer | None = None
        if _is_bert_lowercase(self._tok):
            self._ascii = _load(spec)
            self._ascii.normalizer = normalizers.Lowercase()
        # On the event loop, plain ASCII goes faster still through WordPiece in Python.
        parsed = json.loads(spec)
        self._python = AsciiWordPiece(parsed) if AsciiWordPiece.applies_to(parsed) else None
        self.max_tokens = max_tokens
        sep = self._tok.token_to_id("[SEP]")
        self._sep = np.array([sep if sep is not None else 102], dtype=np.int64)

    @property
    def ascii_fast_path(self) -> bool:
        """Whether plain ASCII texts skip the full normaliser."""
        return self._ascii is not None

    def encode(self, texts: Sequence[str], *, release_gil: bool = False) -> list[Item]:
        """Items for ``texts``, in order. ``release_gil`` keeps to the Rust tokenizer, which
        lets other threads run; the default also uses the faster Python path, which holds
        the GIL, as code on the event loop does anyway."""
        texts = list(texts)
        if self._python is not None and not release_gil:
            return self._python_items(texts, self._python)
        return self._rust_items(texts)

    def _python_items(self, texts: list[str], wordpiece: AsciiWordPiece) -> list[Item]:
        items: list[Item | None] = []
        rest = []
        limit = self.max_tokens
        for text in texts:
            ids = wordpiece.ids(text.lower()) if _plain_ascii(text) else None
            if ids is None:
                rest.append(text)
                items.append(None)
            elif len(ids) > limit:
                ids[limit - 1] = ids[-1]
                items.append(Item(np.array(ids[:limit], dtype=np.int64), truncated=True, text=text))
            else:
                items.append(Item(np.array(ids, dtype=np.int64), text=text))
        if not rest:
            return items  # type: ignore[return-value]
        others = iter(self._rust_items(rest))
        return [item if item is not None else next(others) for item in items]

    def _rust_items(self, texts: list[str]) -> list[Item]:
        fast = self._ascii
        if fast is None:
            return self._items(texts, self._tok)
        plain = [_plain_ascii(t) for t in texts]
        if all(plain):
            return self._items(texts, fast)
        if not any(plain):
            return self._items(texts, self._tok)
        pairs = list(zip(texts, plain, strict=True))
        fast_items = iter(self._items([t for t, p in pairs if p], fast))
        slow_items = iter(self._items([t for t, p in pairs if not p], self._tok))
        return [next(fast_items) if p else next(slow_items) for p in plain]

    def _items(self, texts: list[str], tok: Tokenizer) -> list[Item]:
        # The fast variant skips character offsets, which nothing here uses (~25% less time).
        encodings = tok.encode_batch_fast(texts, add_special_tokens=True)
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


def _load(spec: str) -> Tokenizer:
    tok = Tokenizer.from_str(spec)
    # tokenizer.json ships with padding and truncation at 128; the batcher pads, and we
    # truncate ourselves so that the response can say which texts were cut.
    tok.no_padding()
    tok.no_truncation()
    return tok


def _is_bert_lowercase(tok: Tokenizer) -> bool:
    """A lowercasing BertNormalizer: on ASCII text without the characters above it only
    lowercases (accent stripping and CJK spacing touch no ASCII character)."""
    norm = tok.normalizer
    return isinstance(norm, normalizers.BertNormalizer) and bool(norm.lowercase)


def _plain_ascii(text: str) -> bool:
    return text.isascii() and _DELETED_BY_CLEAN_TEXT.search(text) is None
