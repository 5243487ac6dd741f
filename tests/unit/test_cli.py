"""The command's errors: one line naming what is wrong, exit code 2, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from inferline.cli import main


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["serve", "--port", "abc"], "invalid setting: port: Input should be a valid integer"),
        (["serve", "--max-batch-size", "-3"], "max_batch_size: Input should be greater than"),
        (["worker", "--redis-url", "localhost:6379"], "redis_url: Value error, not a Redis URL"),
        (["submit", ".", "--model", "sentiment", "--redis-url", "redis://h:1"], "Is a directory"),
    ],
)
def test_a_mistake_is_one_line_and_exit_code_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err, err


def test_bad_lines_are_named_by_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rated = tmp_path / "rated.jsonl"
    rated.write_text('{"id": 1, "text": "fine", "rating": 2}\n"just a string"\n')
    assert main(["model", "eval", str(rated)]) == 2
    assert f"{rated}:2: expected an object with 'id', 'text'" in capsys.readouterr().err
    texts = tmp_path / "texts.jsonl"
    texts.write_text('"fine"\n{"text": \n""\n')
    url = ["--redis-url", "redis://127.0.0.1:1"]
    assert main(["submit", str(texts), "--model", "sentiment", *url]) == 2
    assert f"{texts}:2: not JSON" in capsys.readouterr().err
    texts.write_text('"fine"\n""\n')
    assert main(["submit", str(texts), "--model", "sentiment", *url]) == 2
    assert f"{texts}:2: the text is empty" in capsys.readouterr().err
