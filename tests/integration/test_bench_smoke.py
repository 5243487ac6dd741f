"""CI smoke of the side-by-side benchmark: one short round, raw engine and inferline only.

Checks the shape of what `python -m bench.compare --smoke` writes, never its timings.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from bench import overload, report
from bench.common import END, START, splice, wrk
from bench.telemetry import plan, ratios_of

from tests.conftest import ServerFactory, model_dir

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def test_compare_smoke(tmp_path: Path) -> None:
    if shutil.which("wrk") is None:
        pytest.fail("wrk is not installed: `apt-get install -y wrk` (the benchmarks' generator)")
    env = {**os.environ, "INFERLINE_MODEL_DIR": str(model_dir())}
    out, md, img = tmp_path / "out.json", tmp_path / "benchmarks.md", tmp_path / "img"
    md.write_text("# Benchmarks\n\nhand-written text\n\n## Overload\n\nkept\n")
    command = [sys.executable, "-m", "bench.compare", "--smoke"]
    command += ["--json", str(out), "--out", str(md), "--img-dir", str(img)]
    done = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=100, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "round 1 of 1" in done.stderr  # the live progress

    data = json.loads(out.read_text())
    assert data["rounds"] == 1
    assert len(data["raw"]["rounds"]) == 2  # one per round, one after each system
    assert set(data["systems"]) == {"inferline"}
    (round_,) = data["systems"]["inferline"]
    assert {"cold_start_s", "rss_mb", "pss_mb", "single", "multi"} <= set(round_)
    assert {"latency_100", "latency_half"} <= set(round_)
    for workload in ("single", "multi"):
        assert {"texts_per_s", "p50_ms", "p90_ms", "p99_ms", "errors"} <= set(round_[workload])
        assert round_[workload]["texts_per_s"] > 0
        assert round_[workload]["errors"] == 0
        assert round_[workload]["ratio"] > 0  # to the raw runs before and after it
    summary = data["summary"]
    assert summary["raw"] > 0 and summary["best_peer"] == {}
    assert set(summary["systems"]["inferline"]["latency_100"]) >= {"p50_ms", "p90_ms", "p99_ms"}

    text = md.read_text()
    assert text.startswith("# Benchmarks\n\nhand-written text\n\n## Overload\n\nkept\n")
    assert text.count("<!-- compare:start -->") == 1 and text.count("<!-- compare:end -->") == 1
    assert "| system | workload | texts/s | ratio to raw limit | ratio to best peer |" in text
    assert "| inferline | `single` (1 text, 64 conns) |" in text

    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return
    for name in ("throughput.png", "latency_cdf.png"):
        assert (img / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_splice_replaces_only_the_marked_section() -> None:
    block = f"{START}\nnew\n{END}\n"
    document = f"# B\n\nmine\n\n{START}\nold\n{END}\n\n## Queue\n\nkept\n"
    assert splice(document, block) == f"# B\n\nmine\n\n{START}\nnew\n{END}\n\n## Queue\n\nkept\n"
    assert splice("# B\n\nmine\n", block) == f"# B\n\nmine\n\n{block}"


def test_raw_limit_runs_one_named_configuration(tmp_path: Path) -> None:
    from bench.common import raw_limit
    from bench.raw import CONFIGS

    texts = tmp_path / "texts.jsonl"
    texts.write_text("".join(json.dumps({"text": f"review number {i}"}) + "\n" for i in range(40)))
    graph = model_dir() / "sentiment.int8.onnx"
    label = CONFIGS[1].label()
    value, best = raw_limit(graph, texts, label)
    assert best == label and value > 0

    done = subprocess.run(
        [sys.executable, "-m", "bench.raw", str(graph), str(texts), "no such configuration"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode != 0 and "no configuration 'no such configuration'" in done.stderr


def test_telemetry_runs_sit_between_off_runs() -> None:
    order = plan(3)
    assert order[0] == order[-1] == "off" and len(order) == 13
    assert all(order[i] == "off" for i in range(0, len(order), 2))
    assert order[1::2] == ["traced", "full", "full", "traced", "traced", "full"]
    runs = list(
        zip(
            order,
            [100.0, 90.0, 80.0, 70.0, 120.0, 100.0, 80.0, 60.0, 60.0, 50.0, 40.0, 50.0, 60.0],
            strict=True,
        )
    )
    ratios = ratios_of(runs)
    assert ratios["traced"] == pytest.approx([90 / 90, 60 / 70, 50 / 50])
    assert ratios["full"] == pytest.approx([70 / 100, 100 / 100, 50 / 50])


def test_overload_report_compares_each_round_with_the_1x_runs_around_it() -> None:
    def row(
        target: float, goodput: float, refused: int, refused_p99: float, load: int = 1
    ) -> dict[str, float]:
        return {
            "target": target,
            "sent_per_s": target,
            "goodput": goodput,
            "ok_p99_ms": 100.0,
            "refused": refused,
            "refused_p99_ms": refused_p99,
            "expired": 0,
            "errors": 0,
            "client_cores": 0.1 + 0.02 * load,
            "server_cores": 1.92 - 0.02 * load,
            "loop_cores": 0.2 + 0.03 * load,
        }

    runs = {
        1: [row(600, 600, 0, math.nan), row(700, 580, 40, 3.0), row(650, 620, 0, math.nan)],
        2: [row(1200, 540, 600, 4.0, 2), row(1400, 600, 800, 5.0, 2)],
        5: [row(3000, 530, 2400, 6.0, 5), row(3500, 540, 2900, 7.0, 5)],
    }
    args = argparse.Namespace(capacity=0.0, rounds=2, duration=10.0)
    table = overload.report([600.0, 700.0, 650.0], runs, args)
    assert "capacity 650 texts/s on `single`, wrk before each 1x run: 600, 700, 650" in table
    lines = {line.split(" ", 2)[1]: line for line in table.splitlines() if line.startswith("| ")}
    # rounds: 530 / mean(600, 580) and 540 / mean(580, 620)
    assert "| 0.90 (0.90, 0.90) |" in lines["5x"]
    assert "| 0.96 (0.92, 1.00) |" in lines["2x"]
    # the 429s' p99 is over the runs that refused anything, and a dash when none did
    assert "| 3.0 |" in lines["1x"] and "| 6.5 |" in lines["5x"]
    assert "| 0.20 | 1.82 | 0.35 |" in lines["5x"]  # client, server, of it the event loop
    # the server lost 0.08 cores, and its loop took 0.12 more: the lanes had 0.20 fewer
    assert "loop's CPU rose by 0.12 cores and the client's by 0.08" in table
    assert "the rest of the server (the inference lanes) had 0.20 cores fewer" in table
    runs[1][1]["refused_p99_ms"] = math.nan
    assert "| — |" in overload.report([600.0, 700.0, 650.0], runs, args)


def test_systems_are_compared_through_their_ratios_to_the_raw_engine() -> None:
    def workload(texts_per_s: float, ratio: float) -> dict[str, float | None]:
        return {
            "texts_per_s": texts_per_s,
            "ratio": ratio,
            "p50_ms": 1.0,
            "p90_ms": 2.0,
            "p99_ms": 4.0,
        }

    def system(single: tuple[float, float], multi: tuple[float, float]) -> dict[str, object]:
        latency = {"texts_per_s": 100.0, "p50_ms": 1.0, "p90_ms": 2.0, "p99_ms": 3.0}
        return {
            "label": "x",
            "cold_start_s": 1.0,
            "rss_mb": 100.0,
            "pss_mb": 90.0,
            "single": workload(*single),
            "multi": workload(*multi),
            "latency_100": latency,
            "latency_half": {**latency, "rate": 400.0},
        }

    # inferline ran in a fast minute: its texts/s are 4x the peer's, its ratio 3x.
    s = {
        "raw": 800.0,
        "best_peer": {"single": 0.3, "multi": 0.3},
        "best_peer_p99_100": 3.0,
        "systems": {
            "inferline": system((1000.0, 0.9), (1000.0, 0.9)),
            "litserve": system((250.0, 0.3), (250.0, 0.3)),
        },
    }
    assert "| `single` ≥ 3x the best batching peer | 3.00x | yes |" in report.targets(s)
    inferline_single = report.table(s)[3]
    assert "| 0.90 | 3.00 |" in inferline_single


def test_overload_load_carries_the_api_key(server_factory: ServerFactory, tmp_path: Path) -> None:
    """`bench.overload --api-key`: wrk (capacity) and the open-loop client both send it."""
    if shutil.which("wrk") is None:
        pytest.skip("wrk is not installed (scripts/test.sh installs it)")
    server = server_factory({"INFERLINE_API_KEYS": "k1"})
    port = int(server.url.rsplit(":", 1)[1])
    bodies = [b'{"text": "great phone"}', b'{"text": "it broke"}']
    keyed = overload.offered(port, bodies, rate=40, duration=0.5, api_key="k1")
    assert keyed["goodput"] > 0 and keyed["refused"] == 0 and keyed["errors"] == 0
    bare = overload.offered(port, bodies, rate=40, duration=0.5)
    assert bare["goodput"] == 0  # 401s: the key is what let the first run in
    lines = tmp_path / "bodies.jsonl"
    lines.write_bytes(b"\n".join(bodies) + b"\n")
    url = server.url + "/predict"
    assert wrk(url, lines, 2, 1, headers=["Authorization: Bearer k1"]).non_2xx == 0
    assert wrk(url, lines, 2, 1).non_2xx > 0


def test_fidelity_compares_int8_with_fp32_alone_and_batched(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from bench import fidelity

    fidelity.main(["--texts", "6", "--batch", "3"])
    lines = capsys.readouterr().out.splitlines()
    rows = [line for line in lines if line.startswith("| ") and "---" not in line][1:]
    assert len(rows) == 7  # fp32 against itself; each int8 setup against fp32 twice, and itself
    assert rows[0].startswith("| fp32: alone against itself batched | 1.0000 | 1.0000 | 1.0000 |")
    cosines = [float(row.split(" | ")[1]) for row in rows]
    assert all(0.9 < c <= 1.0 for c in cosines), rows
