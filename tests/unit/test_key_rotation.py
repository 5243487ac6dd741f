"""API keys from a file are re-read when it changes: rotation without a restart, and no way
for a reload to open the API."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from inferline.auth import ApiKeys
from inferline.config import Settings
from inferline.errors import InvalidKey, Unauthorized


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def rewrite(path: Path, text: str) -> None:
    """As kubelet does: a new file swapped in, so mtime and inode change."""
    fresh = path.with_suffix(".new")
    fresh.write_text(text)
    os.replace(fresh, path)


def accepts(keys: ApiKeys, key: str) -> bool:
    try:
        keys.identify([("x-api-key", key)])
    except Unauthorized:
        return False
    return True


@pytest.fixture
def setup(tmp_path: Path) -> tuple[ApiKeys, Path, Clock]:
    path = tmp_path / "keys"
    path.write_text("old-key\n")
    clock = Clock()
    settings = Settings(api_keys="listed-key", api_keys_file=path, api_keys_reload_s=5)
    return ApiKeys.from_settings(settings, clock), path, clock


def test_a_rotated_file_takes_effect_after_the_interval(setup: tuple[ApiKeys, Path, Clock]) -> None:
    keys, path, clock = setup
    rewrite(path, "new-key\n")
    assert accepts(keys, "old-key") and not accepts(keys, "new-key")  # not checked yet
    clock.now += 5
    assert accepts(keys, "new-key") and not accepts(keys, "old-key")
    assert accepts(keys, "listed-key")  # the setting's keys stay


def test_an_empty_or_missing_file_keeps_the_keys(setup: tuple[ApiKeys, Path, Clock]) -> None:
    keys, path, clock = setup
    rewrite(path, "\n")
    clock.now += 5
    assert accepts(keys, "old-key")  # an empty file does not open the API...
    with pytest.raises(Unauthorized):
        keys.identify([])  # ...nor does it turn keys off
    path.unlink()
    clock.now += 5
    assert accepts(keys, "old-key")
    rewrite(path, "newer-key\n")
    clock.now += 5
    assert accepts(keys, "newer-key") and not accepts(keys, "old-key")


def test_a_file_without_keys_at_start_turns_keys_on_when_filled(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text("")
    clock = Clock()
    keys = ApiKeys.from_settings(Settings(api_keys_file=path), clock)
    assert not keys.enabled
    rewrite(path, "late-key\n")
    assert not keys.enabled  # not checked yet
    clock.now += 5
    assert keys.enabled and accepts(keys, "late-key") and not accepts(keys, "other")
    rewrite(path, "")
    clock.now += 5
    assert keys.enabled and accepts(keys, "late-key")  # emptied again: still on


def test_a_bom_and_an_empty_x_api_key_hide_nothing(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_bytes(b"\xef\xbb\xbffirst-key\r\nsecond-key\r\n")  # as Notepad saves it
    keys = ApiKeys.from_settings(Settings(api_keys_file=path), Clock())
    assert accepts(keys, "first-key") and accepts(keys, "second-key")
    bearer = ("authorization", "Bearer first-key")
    keys.identify([bearer, ("x-api-key", "")])  # an empty X-API-Key does not hide the bearer
    keys.identify([bearer, ("x-api-key", "  ")])
    with pytest.raises(Unauthorized):
        keys.identify([("x-api-key", "")])


@pytest.mark.parametrize(
    ("headers", "outcome"),
    [
        # X-API-Key is read first, so a proxy's own Authorization can pass through
        ([("authorization", "Bearer proxy-token"), ("x-api-key", "first-key")], "ok"),
        ([("authorization", "Bearer first-key"), ("x-api-key", "wrong")], "invalid"),
        # a header repeated with different values: each reader could take another one
        ([("x-api-key", "wrong"), ("x-api-key", "first-key")], "repeated"),
        ([("x-api-key", "first-key"), ("x-api-key", "wrong")], "repeated"),
        ([("authorization", "Bearer wrong"), ("authorization", "Bearer first-key")], "repeated"),
        ([("x-api-key", "first-key"), ("x-api-key", "first-key")], "ok"),  # the same twice
        ([("authorization", "Basic eDp5")], "missing"),
        ([("authorization", "Bearer nope")], "invalid"),
    ],
)
def test_which_key_counts(headers: list[tuple[str, str]], outcome: str) -> None:
    keys = ApiKeys.from_settings(Settings(api_keys="first-key"), Clock())
    if outcome == "ok":
        keys.identify(headers)
        return
    with pytest.raises(Unauthorized) as caught:
        keys.identify(headers)
    assert isinstance(caught.value, InvalidKey) == (outcome == "invalid")
    message = {"invalid": "not valid", "repeated": "more than once", "missing": "required"}
    assert message[outcome] in str(caught.value)


def test_a_keys_file_that_cannot_be_read_is_named(tmp_path: Path) -> None:
    """The start failed with a bare ``[Errno 2] No such file or directory``."""
    for path, why in ((tmp_path / "missing", "No such file"), (tmp_path, "Is a directory")):
        with pytest.raises(ValueError, match=f"api_keys_file: cannot read {path}: {why}"):
            ApiKeys.from_settings(Settings(api_keys_file=path))
    latin = tmp_path / "keys"
    latin.write_bytes(b"caf\xe9\n")
    with pytest.raises(ValueError, match="not UTF-8"):
        ApiKeys.from_settings(Settings(api_keys_file=latin))
