"""The command's errors: one line naming what is wrong, exit code 2, never a traceback."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from inferline.cli import main
from inferline.config import SERVE_ONLY, WORKER_ONLY, Settings
from inferline.errors import ModelBuildError


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


def test_submit_checks_its_output_before_sending(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Both used to surface only after every job was sent (and, with --wait, done)."""
    texts = tmp_path / "texts.jsonl"
    texts.write_text('"fine"\n')
    submit = ["submit", str(texts), "--redis-url", "redis://127.0.0.1:1"]
    assert main([*submit, "--wait", "-o", str(tmp_path / "missing" / "out.jsonl")]) == 2
    assert "No such file or directory" in capsys.readouterr().err
    assert main([*submit, "--wait", "-o", str(tmp_path)]) == 2
    assert "Is a directory" in capsys.readouterr().err
    # a writable one passes the check, and is not created when the run fails (no Redis)
    assert main([*submit, "--wait", "-o", str(tmp_path / "out.jsonl")]) == 2
    assert "unreachable" in capsys.readouterr().err
    assert main([*submit, "-o", str(tmp_path / "out.jsonl")]) == 2
    assert "--output needs --wait" in capsys.readouterr().err
    assert not (tmp_path / "out.jsonl").exists()


def test_bench_names_a_bad_data_line_and_checks_for_matplotlib_first(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both were tracebacks; the second only after the whole run."""
    data = tmp_path / "texts.jsonl"
    data.write_text('{"text": "fine"}\n{"foo": 1}\n')
    nowhere = ["http://127.0.0.1:1", "--duration", "1", "--quiet"]
    assert main(["bench", *nowhere, "--data", str(data)]) == 2
    assert f"{data}:2: expected a string or an object with 'text'" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed
    assert main(["bench", *nowhere, "--plot-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--plot-dir needs matplotlib" in err and err.count("\n") == 1, err


def test_a_bad_number_flag_says_what_it_got(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["bench", "--duration", "abc"])
    assert exited.value.code == 2
    assert "'abc' is not a positive number" in capsys.readouterr().err


def test_each_command_lists_only_the_settings_it_reads(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``worker --help`` listed the TLS, auth and HTTP limits that only ``serve`` reads."""
    assert set(Settings.model_fields) >= SERVE_ONLY | WORKER_ONLY
    assert not SERVE_ONLY & WORKER_ONLY
    for command, own, others in (
        ("serve", SERVE_ONLY, WORKER_ONLY),
        ("worker", WORKER_ONLY, SERVE_ONLY),
    ):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        listed = capsys.readouterr().out
        assert all(f"--{name.replace('_', '-')} " in listed for name in own)
        assert not [name for name in others if f"--{name.replace('_', '-')} " in listed]
        assert "--model-dir" in listed and "--redis-url" in listed


def test_model_build_never_replaces_a_folder_that_is_not_a_model_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """It renamed the folder away and deleted it, with whatever it held ($HOME, say)."""
    (tmp_path / "precious.txt").write_text("keep me")
    assert main(["model", "build", "--model-dir", str(tmp_path)]) == 2
    assert "holds files the build did not write" in capsys.readouterr().err
    assert (tmp_path / "precious.txt").read_text() == "keep me"
    assert main(["model", "build", "--model-dir", str(tmp_path / "precious.txt")]) == 2
    assert "is a file, not a model directory" in capsys.readouterr().err


def test_a_broken_manifest_is_named_not_called_a_setting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """It read 'invalid setting: Invalid JSON: EOF while parsing' and named no file."""
    (tmp_path / "manifest.json").write_text('{"version": ')
    rated = tmp_path / "rated.jsonl"
    rated.write_text('{"id": 1, "text": "fine", "rating": 2}\n')
    assert main(["model", "eval", str(rated), "--model-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'manifest.json'} is not a valid manifest" in err, err
    assert "invalid setting" not in err


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ('{"id": 1, "text": null, "rating": 2}', "'text' is not a string"),
        ('{"id": 1, "text": ["bad"], "rating": 2}', "'text' is not a string"),
        ('{"id": 1, "text": "fine", "rating": NaN}', "'rating' is not finite"),
        ('{"id": 1, "text": "fine", "rating": "1e999"}', "'rating' is not a number"),
        ('{"id": 1, "text": "fine", "rating": 1' + "0" * 400 + "}", "too large"),
    ],
)
def test_eval_refuses_rows_it_used_to_score_as_something_else(
    tmp_path: Path, line: str, why: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """null was scored as the text "None", NaN as Neutral, "1e999" as Positive."""
    rated = tmp_path / "rated.jsonl"
    rated.write_text(line + "\n")
    assert main(["model", "eval", str(rated)]) == 2
    assert f"{rated}:1: expected an object" in (err := capsys.readouterr().err) and why in err


def test_eval_json_without_polar_rows_is_strict_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """It printed NaN, which strict JSON parsers refuse."""
    rated = tmp_path / "neutral.jsonl"
    rated.write_text('{"id": 1, "text": "It comes in a box.", "rating": 0.1}\n')
    assert main(["model", "eval", str(rated), "--json"]) == 0

    def refuse(constant: str) -> None:
        raise ValueError(constant)

    scores = json.loads(capsys.readouterr().out, parse_constant=refuse)
    assert scores["model"]["polar_accuracy"] is None and scores["model"]["n"] == 1


def test_model_build_replaces_a_model_directory_that_lost_its_manifest(tmp_path: Path) -> None:
    """serve and eval send such a folder to `model build`, which must not refuse it."""
    from inferline.modelrepo.build import _check_replaceable

    for name in ("tokenizer.json", "model.onnx", "sentiment.int8.onnx"):
        (tmp_path / name).write_bytes(b"partial")
    _check_replaceable(tmp_path)  # the build's own files alone: replaced
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ModelBuildError, match=r"files the build did not write \('notes.txt'\)"):
        _check_replaceable(tmp_path)
