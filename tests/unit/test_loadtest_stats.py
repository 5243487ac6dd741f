"""The load generator's statistics: percentiles, summaries, CDF points, request bodies."""

from __future__ import annotations

import json
import math
import ssl
from pathlib import Path

import pytest

from inferline.loadtest.client import Target
from inferline.loadtest.runner import bodies, load_texts
from inferline.loadtest.stats import cdf, percentile, summarize


def test_percentile_nearest_rank() -> None:
    values = [float(x) for x in range(1, 101)]  # 1..100
    assert percentile(values, 50) == 50.0
    assert percentile(values, 90) == 90.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile(values, 0.1) == 1.0


def test_percentile_returns_an_observed_value_whatever_the_order() -> None:
    values = [5.0, 1.0, 4.0, 2.0, 3.0]
    assert percentile(values, 50) == 3.0
    assert percentile(values, 99) == 5.0
    assert percentile([7.0], 50) == 7.0


def test_percentile_of_nothing_is_nan_and_bad_q_is_refused() -> None:
    assert math.isnan(percentile([], 50))
    for q in (0, -1, 101):
        with pytest.raises(ValueError):
            percentile([1.0], q)


def test_summarize_counts_texts_of_successes_only() -> None:
    s = summarize(
        "multi",
        [0.010, 0.020, 0.030, 0.040],
        texts_per_request=16,
        elapsed_s=2.0,
        statuses={200: 4, 429: 3},
        errors=1,
    )
    assert (s.requests, s.ok, s.texts, s.errors) == (7, 4, 64, 1)
    assert s.texts_per_s == 32.0
    assert s.p50_ms == pytest.approx(20.0)
    assert s.p99_ms == pytest.approx(40.0)
    assert s.mean_ms == pytest.approx(25.0)
    assert s.max_ms == pytest.approx(40.0)
    assert s.statuses == {200: 4, 429: 3}


def test_summarize_with_no_success() -> None:
    s = summarize("single", [], texts_per_request=1, elapsed_s=0.0, statuses={503: 2})
    assert s.ok == 0 and s.texts_per_s == 0.0
    assert math.isnan(s.p50_ms) and math.isnan(s.max_ms)


def test_cdf_is_monotonic_ends_at_one_and_keeps_the_maximum() -> None:
    values = [float(x) for x in range(10_000, 0, -1)]
    xs, ys = cdf(values, points=100)
    assert len(xs) <= 102
    assert xs == sorted(xs) and ys == sorted(ys)
    assert xs[-1] == 10_000.0 and ys[-1] == 1.0
    assert 0 < ys[0] <= 0.011
    assert cdf([]) == ([], [])


def test_target_parse() -> None:
    assert Target.parse("http://localhost:8000") == Target("localhost", 8000, "/predict")
    assert Target.parse("127.0.0.1:9000/api/") == Target("127.0.0.1", 9000, "/api/predict")
    assert Target.parse("http://svc") == Target("svc", 80, "/predict")
    secure = Target.parse("https://svc/v1")
    assert (secure.port, secure.path) == (443, "/v1/predict")
    assert secure.tls is not None and secure.tls.verify_mode == ssl.CERT_REQUIRED
    keyed = Target.parse("svc:81", headers=["Authorization: Bearer k1"])
    assert b"\r\nAuthorization: Bearer k1\r\nContent-Length: " in keyed.head()
    for url in ("ftp://svc", "http://"):
        with pytest.raises(ValueError):
            Target.parse(url)
    with pytest.raises(ValueError, match="https"):
        Target.parse("http://svc", tls=ssl.create_default_context())
    for line in ("Authorization: Bearer k1\r\nX: 1", "no colon", ": empty name"):
        with pytest.raises(ValueError, match="one 'Name: value' line"):
            Target.parse("svc", headers=[line])


def test_bodies_single_and_multi() -> None:
    texts = [f"text {i}" for i in range(40)]
    single = [json.loads(b) for b in bodies(texts, 1)]
    assert single[0] == {"text": "text 0"} and len(single) == 40
    multi = [json.loads(b) for b in bodies(texts, 16)]
    assert len(multi) == 2 and all(len(b["texts"]) == 16 for b in multi)
    few = [json.loads(b) for b in bodies(texts[:3], 16)]
    assert len(few) == 1 and len(few[0]["texts"]) == 16  # cycles through the texts


def test_load_texts(tmp_path: Path) -> None:
    assert load_texts(None)
    jsonl = tmp_path / "t.jsonl"
    jsonl.write_text('{"text": "a"}\n"b"\n\n')
    assert load_texts(jsonl) == ["a", "b"]
    plain = tmp_path / "t.txt"
    plain.write_text("one\ntwo\n")
    assert load_texts(plain) == ["one", "two"]


def test_the_json_summary_has_no_nan() -> None:
    from inferline.loadtest.runner import _finite

    summary = {"ok": 0, "p50_ms": float("nan"), "runs": [{"p99_ms": float("nan")}, 1.5]}
    assert _finite(summary) == {"ok": 0, "p50_ms": None, "runs": [{"p99_ms": None}, 1.5]}
