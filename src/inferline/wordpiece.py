"""BERT WordPiece for plain ASCII text in Python, about 4x faster than `tokenizers` per text.

For short texts the Rust tokenizer's cost is mostly its general machinery (an `Encoding`
with token strings, offsets and masks), not the splitting. A lowercasing BERT tokenizer on
ASCII text is simple: lowercase, split into runs of letters and digits and single punctuation
characters, and look each word up, greedily longest first. tests/unit/test_tokenizer.py
checks that the ids are the Rust tokenizer's own, on the review data and on random text.
"""

from __future__ import annotations

import re
from typing import Any

# After lowercasing: runs of letters and digits, or one punctuation character. In ASCII every
# printable character that is neither alphanumeric nor a space is BERT punctuation. Control
# characters never get here: the caller sends them to the full tokenizer.
_WORDS = re.compile(r"[a-z0-9]+|[^a-z0-9 \t\n\r]")


class AsciiWordPiece:
    """Ids for plain ASCII texts, exactly as a lowercasing BERT ``tokenizer.json`` gives."""

    def __init__(self, spec: dict[str, Any]) -> None:
        model = spec["model"]
        self._vocab: dict[str, int] = dict(model["vocab"])
        prefix: str = model["continuing_subword_prefix"]
        self._continuing = {
            w[len(prefix) :]: i for w, i in self._vocab.items() if w.startswith(prefix)
        }
        self._unk = self._vocab[model["unk_token"]]
        self._max_chars: int = model["max_input_chars_per_word"]
        template = _bert_template(spec["post_processor"])
        if template is None:
            raise ValueError("not a [CLS] text [SEP] post-processor")
        self._cls, self._sep = template
        # Added tokens are matched in the text before anything else; a text that might hold
        # one goes to the full tokenizer (lowercased here, so the check errs towards it).
        self._added = tuple(t["content"].lower() for t in spec.get("added_tokens") or ())

    @staticmethod
    def applies_to(spec: dict[str, Any]) -> bool:
        """Whether ``spec`` is a lowercasing BERT WordPiece tokenizer this class reproduces."""
        norm = spec.get("normalizer") or {}
        model = spec.get("model") or {}
        return (
            norm.get("type") == "BertNormalizer"
            and bool(norm.get("lowercase"))
            and bool(norm.get("clean_text"))
            and (spec.get("pre_tokenizer") or {}).get("type") == "BertPreTokenizer"
            and model.get("type") == "WordPiece"
            and _bert_template(spec.get("post_processor")) is not None
        )

    def ids(self, lowered: str) -> list[int] | None:
        """Ids of a lowercased plain-ASCII text, or None if it may hold an added token."""
        for token in self._added:
            if token in lowered:
                return None
        ids = [self._cls]
        get = self._vocab.get
        for word in _WORDS.findall(lowered):
            i = get(word)  # no vocabulary word is over the length limit
            if i is None:
                ids.extend(self._pieces(word))
            else:
                ids.append(i)
        ids.append(self._sep)
        return ids

    def _pieces(self, word: str) -> list[int]:
        """Greedy longest-match-first; a word that does not split fully is one unknown."""
        if len(word) > self._max_chars:
            return [self._unk]
        pieces = []
        table = self._vocab
        start, n = 0, len(word)
        while start < n:
            for end in range(n, start, -1):
                i = table.get(word[start:end])
                if i is not None:
                    break
            else:
                return [self._unk]
            pieces.append(i)
            start = end
            table = self._continuing
        return pieces


def _bert_template(post: Any) -> tuple[int, int] | None:
    """The ids around a single text of a ``[CLS] A [SEP]`` post-processor, if it is one."""
    if not isinstance(post, dict):
        return None
    if post.get("type") == "BertProcessing":
        return int(post["cls"][1]), int(post["sep"][1])
    if post.get("type") != "TemplateProcessing":
        return None
    single = post.get("single") or []
    if len(single) != 3 or "Sequence" not in single[1]:
        return None
    first, last = single[0].get("SpecialToken"), single[2].get("SpecialToken")
    specials = post.get("special_tokens") or {}
    ids = [specials.get(t["id"], {}).get("ids") if t else None for t in (first, last)]
    if not all(i is not None and len(i) == 1 for i in ids):
        return None
    return int(ids[0][0]), int(ids[1][0])  # type: ignore[index]
