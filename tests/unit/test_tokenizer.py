"""TextEncoder's fast paths for ASCII text give exactly the ids of the model's own tokenizer:
WordPiece in Python (the default) and the Rust tokenizer with a lowercase-only normaliser
(``release_gil=True``, for large requests tokenised in a thread)."""

from __future__ import annotations

import functools
import json
import string
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer

from inferline.errors import ModelBuildError
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
    "unbelievableness antidisestablishmentarianism qwxzv 4mp 512mb",  # pieces and unknowns
    "[CLS] [SEP] [UNK] [PAD] [MASK] [cls] [Sep",  # added tokens are matched before anything
    "a" * 100 + " " + "b" * 101,  # at and past the 100-character word limit
]


def reference(texts: Sequence[str], limit: int) -> list[tuple[list[int], bool]]:
    """The unmodified tokenizer.json, truncated the way TextEncoder documents."""
    out = []
    for enc in _tokenizer().encode_batch(list(texts)):
        ids = list(enc.ids)
        if len(ids) > limit:
            out.append(([*ids[: limit - 1], ids[-1]], True))
        else:
            out.append((ids, False))
    return out


@functools.cache
def _tokenizer() -> Tokenizer:
    tok = Tokenizer.from_file(str(model_dir() / "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()
    return tok


@functools.cache
def _encoder(limit: int) -> TextEncoder:
    return TextEncoder(model_dir() / "tokenizer.json", limit)


def encoded(
    texts: Sequence[str], limit: int = 256, release_gil: bool = False
) -> list[tuple[list[int], bool]]:
    encoder = _encoder(limit)
    assert encoder.ascii_fast_path  # the model's BERT normaliser: the fast path is taken
    items = encoder.encode(texts, release_gil=release_gil)
    return [(item.ids.tolist(), item.truncated) for item in items]


PATHS = pytest.mark.parametrize("release_gil", [False, True], ids=["python", "rust"])


@PATHS
@pytest.mark.parametrize("text", EDGE_CASES)
def test_edge_cases_match_the_tokenizer(text: str, release_gil: bool) -> None:
    assert encoded([text], release_gil=release_gil) == reference([text], 256)


@PATHS
def test_mixed_batches_keep_their_order(release_gil: bool) -> None:
    texts = [REVIEWS[0], NON_ASCII[0], EDGE_CASES[5], REVIEWS[1], NON_ASCII[2], EDGE_CASES[-2]]
    assert encoded(texts, release_gil=release_gil) == reference(texts, 256)


@PATHS
def test_the_review_corpus_matches_the_tokenizer(release_gil: bool) -> None:
    files = sorted(DATA.glob("*.jsonl"))
    if not files:
        pytest.fail(f"no sentiment data at {DATA}")
    lines = [line for f in files for line in f.read_text(encoding="utf-8").splitlines()]
    texts = [json.loads(line)["text"] for line in lines if line.strip()]
    assert len(texts) > 1000
    assert encoded(texts, release_gil=release_gil) == reference(texts, 256)


@PATHS
@pytest.mark.parametrize("limit", [2, 3, 8])
def test_truncation_keeps_the_separator(limit: int, release_gil: bool) -> None:
    texts = [REVIEWS[0], "short", "", "[CLS] not special here? it is", NON_ASCII[0]]
    assert encoded(texts, limit, release_gil) == reference(texts, limit)


# Random ASCII weighted towards what splits words: letters, digits, punctuation, whitespace,
# control characters, long runs and the added tokens' own strings.
_PIECES = st.one_of(
    st.text(alphabet=string.ascii_letters + string.digits, min_size=1, max_size=12),
    st.sampled_from([" ", "  ", "\t", "\n", "\r\n", "\x0b", "\x00", "\x7f", "\x1f"]),
    st.sampled_from(list(string.punctuation)),
    st.sampled_from(["[CLS]", "[SEP]", "[MASK]", "[UNK", "##", "'s", "n't", "x" * 101]),
    st.text(alphabet=st.characters(max_codepoint=127), max_size=8),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.lists(_PIECES, max_size=30).map("".join), min_size=1, max_size=4))
def test_random_ascii_matches_the_tokenizer(texts: list[str]) -> None:
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


def test_a_broken_tokenizer_file_is_named(tmp_path: Path) -> None:
    """The tokenizers library's bare Exception was a traceback from `model eval`, and a
    log line that named no file from `serve`."""
    broken = tmp_path / "tokenizer.json"
    broken.write_text('{"version":')
    with pytest.raises(ModelBuildError, match=f"{broken} is not a valid tokenizer"):
        TextEncoder(broken, 256)
