"""TextEncoder's ASCII fast path gives exactly the ids of the model's own tokenizer."""

from __future__ import annotations

import json
import string
from collections.abc import Sequence
from pathlib import Path

import pytest
from tokenizers import Tokenizer

from inferline.tokenizer import TextEncoder
from tests.conftest import model_dir
from tests.e2e.samples import NON_ASCII, REVIEWS

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "sentiment"

EDGE_CASES = [
    "",
    " ",
    "UPPER lower MiXeD",
    "tabs\tand\nnewlines\r\nand  spaces",
    "vertical\x0btab and form\x0cfeed",
    "nul\x00byte, bell\x07, escape\x1b[31m, delete\x7f",
    "unit\x1fseparator",
    "x" * 150 + " a word over 100 characters",
    "punctuation!!! ... ?!?, (brackets) [and] {braces} #hash @at $5.99 100%",
    "don't won't can't it's",
    string.printable,
    "word " * 400,  # past the 256-token limit: truncated
]


def reference(texts: Sequence[str], limit: int) -> list[tuple[list[int], bool]]:
    """The unmodified tokenizer.json, truncated the way TextEncoder documents."""
    tok = Tokenizer.from_file(str(model_dir() / "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()
    out = []
    for enc in tok.encode_batch(list(texts)):
        ids = list(enc.ids)
        if len(ids) > limit:
            out.append(([*ids[: limit - 1], ids[-1]], True))
        else:
            out.append((ids, False))
    return out


def encoded(texts: Sequence[str], limit: int = 256) -> list[tuple[list[int], bool]]:
    encoder = TextEncoder(model_dir() / "tokenizer.json", limit)
    assert encoder.ascii_fast_path  # the model's BERT normaliser: the fast path is taken
    items = encoder.encode(texts)
    return [(item.ids.tolist(), item.truncated) for item in items]


@pytest.mark.parametrize("text", EDGE_CASES)
def test_edge_cases_match_the_tokenizer(text: str) -> None:
    assert encoded([text]) == reference([text], 256)


def test_mixed_batches_keep_their_order() -> None:
    texts = [REVIEWS[0], NON_ASCII[0], EDGE_CASES[5], REVIEWS[1], NON_ASCII[2], REVIEWS[2]]
    assert encoded(texts) == reference(texts, 256)


def test_the_review_corpus_matches_the_tokenizer() -> None:
    files = sorted(DATA.glob("*.jsonl"))
    if not files:
        pytest.fail(f"no sentiment data at {DATA}")
    lines = [line for f in files for line in f.read_text(encoding="utf-8").splitlines()]
    texts = [json.loads(line)["text"] for line in lines if line.strip()]
    assert len(texts) > 1000
    assert encoded(texts) == reference(texts, 256)


def test_a_non_bert_normaliser_keeps_the_slow_path(tmp_path: Path) -> None:
    spec = json.loads((model_dir() / "tokenizer.json").read_text(encoding="utf-8"))
    spec["normalizer"] = None  # a cased tokenizer: lowercasing would change its ids
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(spec), encoding="utf-8")
    encoder = TextEncoder(path, 256)
    assert not encoder.ascii_fast_path
    (item,) = encoder.encode(["Hello World"])
    cased = Tokenizer.from_file(str(path))
    cased.no_truncation()
    cased.no_padding()
    assert item.ids.tolist() == cased.encode("Hello World").ids
