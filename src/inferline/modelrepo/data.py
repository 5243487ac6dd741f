"""The human-rated sentiment data: loading, the label rule and the fixed validation split."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

from inferline import textfile

LABELS = ("Negative", "Neutral", "Positive")
FILES = ("amazon_reviews.jsonl", "tweets.jsonl", "nyt_editorials.jsonl")


@dataclass(frozen=True, slots=True)
class Example:
    id: str
    text: str
    label: int
    source: str
    rating: float  # mean of 20 human ratings, -4 to +4


def label_of(rating: float) -> int:
    """The project's label rule: Positive >= 0.5, Negative <= -0.5, else Neutral."""
    if rating >= 0.5:
        return 2
    if rating <= -0.5:
        return 0
    return 1


def is_validation(source: str, example_id: str) -> bool:
    """One row in five of every file, chosen by a hash of its id, is held out for validation."""
    digest = hashlib.sha256(f"{source}:{example_id}".encode()).digest()
    return digest[0] % 5 == 0


def load_file(path: Path) -> list[Example]:
    source = path.name.removesuffix(".jsonl")
    rows: list[Example] = []
    for n, line in textfile.lines(textfile.read(path)):  # a BOM skipped, bad bytes named
        try:
            row = json.loads(line)
            rating, text = row["rating"], row["text"]
            # str() and float() took null as "None", a list as its repr, "1e999" as inf
            if not isinstance(text, str) or not text.strip():
                raise TypeError("'text' is not a string with words")
            if isinstance(rating, bool) or not isinstance(rating, int | float):
                raise TypeError("'rating' is not a number")
            if not math.isfinite(rating):
                raise ValueError("'rating' is not finite")
            example = Example(str(row["id"]), text, label_of(rating), source, float(rating))
        except (ValueError, KeyError, TypeError, OverflowError) as exc:  # Overflow: 1e400 as an int
            why = f"no field {exc}" if isinstance(exc, KeyError) else str(exc)
            raise ValueError(
                f"{path}:{n}: expected an object with 'id', 'text' and a numeric 'rating' ({why})"
            ) from None
        rows.append(example)
    return rows


def load_split(data_dir: Path) -> tuple[list[Example], list[Example]]:
    """Return (train, validation) over every file of ``data_dir``."""
    train: list[Example] = []
    val: list[Example] = []
    missing = [name for name in FILES if not (data_dir / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{data_dir} lacks {', '.join(missing)}")
    for name in FILES:
        for ex in load_file(data_dir / name):
            (val if is_validation(ex.source, ex.id) else train).append(ex)
    return train, val
