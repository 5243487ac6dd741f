"""Benchmark inferline against the raw-engine limit, per ../shared/BENCH.md.

    python -m bench.run [--rounds 3] [--duration 10] [--out docs/benchmarks.md]

Each round runs, in turn: the raw engine (own process), the service on `single`
(1 text/request, 64 connections) and on `multi` (16 texts/request, 8 connections), all with
wrk. Figures are medians over rounds; every serving figure is also given as a fraction of the
raw limit from the same run. Then `latency`: an open-loop load at 50% of the measured
`single` maximum. Cold start, RSS after warm-up and the padding ratio are recorded too.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from bench.loadgen import run_open_loop
from inferline.config import Settings

ROOT = Path(__file__).resolve().parent.parent
LUA = ROOT / "bench" / "wrk" / "bodies.lua"
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "sentiment" / "amazon_reviews.jsonl"


@dataclass
class WrkResult:
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    cpu_s: float


@dataclass
class Run:
    raw: list[float] = field(default_factory=list)
    raw_config: str = ""
    single: list[WrkResult] = field(default_factory=list)
    multi: list[WrkResult] = field(default_factory=list)
    padding: list[float] = field(default_factory=list)
    cold_start_s: float = 0.0
    rss_mb: float = 0.0
    latency: dict[str, float] = field(default_factory=dict)


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[unit]


def wrk(url: str, bodies: Path, connections: int, duration: float) -> WrkResult:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{max(1, round(duration))}s",
            "--latency",
            "-s",
            str(LUA),
            url,
            "--",
            str(bodies),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"\s50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"\s99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return WrkResult(rps, p50, p99, int(bad.group(1)) if bad else 0, cpu)


def raw_limit(model: Path, texts: Path) -> tuple[float, str]:
    out = subprocess.run(
        [sys.executable, "-m", "bench.raw", str(model), str(texts)],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout
    data = json.loads(out)
    return float(data["texts_per_s"]), str(data["best"])


def counters(url: str) -> tuple[float, float]:
    text = httpx.get(url + "/metrics").text
    tokens = padding = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if (
                sample.name == "inferline_tokens_total"
                and sample.labels.get("direction") == "input"
            ):
                tokens += sample.value
            elif sample.name == "inferline_padding_tokens_total":
                padding += sample.value
    return tokens, padding


def start_server(port: int, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], float]:
    started = time.monotonic()
    proc = subprocess.Popen(
        [
            str(ROOT / ".venv" / "bin" / "inferline"),
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=1).status_code == 200:
                return proc, time.monotonic() - started
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() - started > 60:
            raise RuntimeError("the server did not start")
        time.sleep(0.01)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def write_bodies(data: Path, tmp: Path) -> tuple[Path, Path, Path]:
    texts = [json.loads(line)["text"] for line in data.open()]
    single, multi, plain = tmp / "single.jsonl", tmp / "multi.jsonl", tmp / "texts.jsonl"
    single.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    multi.write_text(
        "".join(
            json.dumps({"texts": texts[i : i + 16]}) + "\n" for i in range(0, len(texts) - 15, 16)
        )
    )
    plain.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return single, multi, plain


def benchmark(args: argparse.Namespace) -> Run:
    settings = Settings()
    model = settings.model_dir / "sentiment.int8.onnx"
    run = Run()
    port = 18000 + os.getpid() % 1000
    url = f"http://127.0.0.1:{port}/predict"
    with tempfile.TemporaryDirectory() as tmp_dir:
        single, multi, texts = write_bodies(args.data, Path(tmp_dir))
        proc, run.cold_start_s = start_server(port, {})
        try:
            wrk(url, single, 64, 2)  # warm-up
            run.rss_mb = rss_mb(proc.pid)
            for r in range(args.rounds):
                raw, run.raw_config = raw_limit(model, texts)
                run.raw.append(raw)
                t0, p0 = counters(f"http://127.0.0.1:{port}")
                run.single.append(wrk(url, single, 64, args.duration))
                t1, p1 = counters(f"http://127.0.0.1:{port}")
                run.padding.append((t1 - t0 + p1 - p0) / max(t1 - t0, 1))
                run.multi.append(wrk(url, multi, 8, args.duration))
                print(
                    f"round {r + 1}: raw {raw:.0f}/s, "
                    f"single {run.single[-1].requests_per_s:.0f}/s, "
                    f"multi {16 * run.multi[-1].requests_per_s:.0f} texts/s",
                    file=sys.stderr,
                    flush=True,
                )
            rate = 0.5 * statistics.median(w.requests_per_s for w in run.single)
            bodies = [line.encode() for line in single.read_text().splitlines()]
            result = run_open_loop(
                "127.0.0.1", port, path="/predict", bodies=bodies, rate=rate, duration=args.duration
            )
            lat = sorted(result.latencies)
            run.latency = {
                "rate": rate,
                "p50_ms": 1e3 * lat[len(lat) // 2],
                "p90_ms": 1e3 * lat[int(len(lat) * 0.9)],
                "p99_ms": 1e3 * lat[int(len(lat) * 0.99)],
                "errors": result.errors,
            }
            run.rss_mb = max(run.rss_mb, rss_mb(proc.pid))
        finally:
            proc.terminate()
            proc.wait(30)
    return run


def machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    ).stdout.strip()
    return f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, commit {commit}"


def row(*cells: str) -> str:
    return "| " + " | ".join(cells) + " |"


def report(run: Run, args: argparse.Namespace) -> str:
    raw = statistics.median(run.raw)
    single = statistics.median(w.requests_per_s for w in run.single)
    multi = 16 * statistics.median(w.requests_per_s for w in run.multi)
    s_p50 = statistics.median(w.p50_ms for w in run.single)
    s_p99 = statistics.median(w.p99_ms for w in run.single)
    m_p50 = statistics.median(w.p50_ms for w in run.multi)
    m_p99 = statistics.median(w.p99_ms for w in run.multi)
    duration = args.duration
    wrk_share = statistics.median(w.cpu_s / duration for w in run.single) / (os.cpu_count() or 1)
    lat = run.latency
    lines = [
        "# Benchmarks",
        "",
        f"Generated by `python -m bench.run --rounds {args.rounds} --duration {args.duration}` on "
        f"{time.strftime('%Y-%m-%d')}, {machine()}. No GPU.",
        "",
        "Method (../shared/BENCH.md): medians of the rounds; each round runs the raw engine, then",
        "the service on `single` and `multi`, so every ratio compares figures taken side by side.",
        "The raw limit is texts into ONNX Runtime with no server, timed from tokenisation, at the",
        f"best configuration found in the run ({run.raw_config}).",
        f"Load comes from wrk (one thread), which used {100 * wrk_share:.0f}% of the machine's CPU",
        "on `single`.",
        "",
        "## Service against the raw engine (int8 sentiment model)",
        "",
        row(
            "system",
            "workload",
            "texts/s",
            "ratio to raw limit",
            "p50 ms",
            "p99 ms",
            "RSS MB",
            "cold start s",
        ),
        row(*["---"] * 8),
        row("raw ONNX Runtime", "best batch", f"{raw:.0f}", "1.00", "", "", "", ""),
        row(
            "inferline",
            "single (1 text, 64 conns)",
            f"{single:.0f}",
            f"{single / raw:.2f}",
            f"{s_p50:.1f}",
            f"{s_p99:.1f}",
            f"{run.rss_mb:.0f}",
            f"{run.cold_start_s:.2f}",
        ),
        row(
            "inferline",
            "multi (16 texts, 8 conns)",
            f"{multi:.0f}",
            f"{multi / raw:.2f}",
            f"{m_p50:.1f}",
            f"{m_p99:.1f}",
            "",
            "",
        ),
        row(
            "inferline",
            f"latency (open loop, {lat['rate']:.0f} req/s)",
            f"{lat['rate']:.0f}",
            f"{lat['rate'] / raw:.2f}",
            f"{lat['p50_ms']:.1f}",
            f"{lat['p99_ms']:.1f}",
            "",
            "",
        ),
        "",
        f"Open-loop latency at 50% of the `single` maximum: p50 {lat['p50_ms']:.1f} ms, "
        f"p90 {lat['p90_ms']:.1f} ms, p99 {lat['p99_ms']:.1f} ms, {lat['errors']:.0f} errors.",
        "",
        "Padding ratio on `single` (padded tokens / real tokens): "
        f"{statistics.median(run.padding):.3f}.",
        "",
        "Rounds (texts/s): raw "
        + ", ".join(f"{x:.0f}" for x in run.raw)
        + "; single "
        + ", ".join(f"{w.requests_per_s:.0f}" for w in run.single)
        + "; multi "
        + ", ".join(f"{16 * w.requests_per_s:.0f}" for w in run.multi)
        + ".",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per workload")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    args = parser.parse_args()
    run = benchmark(args)
    text = report(run, args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
