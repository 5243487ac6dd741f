"""``inferline submit``'s file reading: every line checked before anything is sent, lines
split where JSONL splits them, and CSV as Excel writes it."""

from __future__ import annotations

from pathlib import Path

import pytest

from inferline.errors import InvalidInput
from inferline.queue.submit import read_texts


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("data", "texts"),
    [
        # JSON strings may hold these unescaped; str.splitlines() split at them
        ('"one\u2028two"\n"next"\n'.encode(), ["one\u2028two", "next"]),
        ('"one\u0085two"\n'.encode(), ["one\u0085two"]),
        (b'{"text": "crlf"}\r\n"b"\r\n\r\n', ["crlf", "b"]),
        (b'\xef\xbb\xbf"after a BOM"\n', ["after a BOM"]),
    ],
)
def test_jsonl_lines(tmp_path: Path, data: bytes, texts: list[str]) -> None:
    assert read_texts(write(tmp_path, "in.jsonl", data)) == texts


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b'"a"\x0b"b"\n', "in.jsonl:1: not JSON"),  # one line, not two jobs
        (b'"fine"\n"  "\n', "in.jsonl:2: the text is empty"),
        (b'"caf\xe9"\n', "not UTF-8 (at byte 4)"),
    ],
)
def test_jsonl_refusals(tmp_path: Path, data: bytes, message: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        read_texts(write(tmp_path, "in.jsonl", data))
    assert message in str(caught.value)


def test_csv_as_excel_writes_it(tmp_path: Path) -> None:
    data = b'\xef\xbb\xbftext,id\r\n"Great, really",1\r\n\r\n"two\r\nlines",2\r\n'
    assert read_texts(write(tmp_path, "in.csv", data)) == ["Great, really", "two\r\nlines"]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"id,text\n1,fine\n2,\n", "in.csv:3: the text is empty"),  # was sent, then failed
        (b"id,text\n1,fine\n2\n", "in.csv:3: the text is empty"),  # a short row
        (b"id,body\n1,fine\n", "no 'text' column"),
    ],
)
def test_csv_refusals(tmp_path: Path, data: bytes, message: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        read_texts(write(tmp_path, "in.csv", data))
    assert message in str(caught.value)
