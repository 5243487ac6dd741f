"""The cost of telemetry on `single` (1 text a request, 64 connections), per ../shared/BENCH.md.

    python -m bench.telemetry [--rounds 3] [--duration 10] [--out docs/benchmarks.md]

Three servers take turns, one at a time:
- off: no tracing, no access log (the Prometheus metrics cannot be turned off);
- traced: the metrics and tracing of every request, batch and engine call through a
  BatchSpanProcessor into an in-process exporter that counts the spans (the issue's "full
  telemetry": metrics plus tracing);
- full: all of that and the access log (JSON lines to a file).
Each traced or full run sits between two off runs and is compared with their mean (a round
is off, traced, off, full, with traced and full swapping places each round, and one more off
run ends the sequence): this shared machine's speed flips by up to 20% from one minute to
the next. The figures are the medians over rounds of those ratios.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from bench.common import DEFAULT_DATA, ROOT, machine, splice, wrk
from bench.run import start_server, write_bodies

START, END = "<!-- telemetry:start -->", "<!-- telemetry:end -->"


def serve_traced(port: int, access_log: bool) -> None:
    """The server of the `full` side: tracing into an exporter in this process."""
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )

    from inferline.config import Settings
    from inferline.server import serve
    from inferline.telemetry import tracing

    class Counting(SpanExporter):
        spans = 0

        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            Counting.spans += len(spans)
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Counting()))
    tracing.install(provider)
    try:
        serve(Settings(host="127.0.0.1", port=port, grpc_port=port + 1, access_log=access_log))
    finally:
        provider.shutdown()
        print(f"exported {Counting.spans} spans", file=sys.stderr)


MODES = ("off", "traced", "full")


def start(mode: str, port: int, log: Path) -> subprocess.Popen[bytes]:
    traced = [sys.executable, "-m", "bench.telemetry", "--serve-traced", str(port)]
    if mode == "full":
        traced.append("--access-log")
    env = {"INFERLINE_ACCESS_LOG": "true" if mode == "full" else "false"}
    proc, _ = start_server(port, env, traced if mode != "off" else None, log)
    return proc


def plan(rounds: int) -> list[str]:
    """The order of the runs: every traced or full run between two off runs."""
    runs: list[str] = []
    for r in range(rounds):
        first, second = ("traced", "full") if r % 2 == 0 else ("full", "traced")
        runs += ["off", first, "off", second]
    return [*runs, "off"]


def measure(args: argparse.Namespace) -> list[tuple[str, float]]:
    port = 19000 + os.getpid() % 500
    runs: list[tuple[str, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        files, _ = write_bodies(args.data, Path(tmp))
        order = plan(args.rounds)
        for i, mode in enumerate(order):
            proc = start(mode, port, Path(tmp) / f"{mode}.log")
            try:
                url = f"http://127.0.0.1:{port}/predict"
                wrk(url, files["single"], 64, 2)  # warm-up
                result = wrk(url, files["single"], 64, args.duration)
            finally:
                proc.terminate()
                proc.wait(30)
            runs.append((mode, result.texts_per_s))
            label = f"round {i // 4 + 1}" if i < len(order) - 1 else "last"
            print(f"{label} {mode}: {result.texts_per_s:.0f} texts/s", flush=True)
        for mode in MODES[1:]:
            spans = (Path(tmp) / f"{mode}.log").read_text(errors="replace")
            print(mode, spans.splitlines()[-1] if spans else "", flush=True)
    return runs


def ratios_of(runs: list[tuple[str, float]]) -> dict[str, list[float]]:
    """Each traced and full run over the mean of the off runs just before and after it."""
    ratios: dict[str, list[float]] = {mode: [] for mode in MODES[1:]}
    for i, (mode, value) in enumerate(runs):
        if mode != "off":
            (before, a), (after, b) = runs[i - 1], runs[i + 1]
            assert before == after == "off", "every run is between two off runs"
            ratios[mode].append(value / ((a + b) / 2))
    return ratios


def section(runs: list[tuple[str, float]], args: argparse.Namespace) -> str:
    results: dict[str, list[float]] = {mode: [] for mode in MODES}
    for mode, value in runs:
        results[mode].append(value)
    ratios = ratios_of(runs)
    kept = {mode: statistics.median(r) for mode, r in ratios.items()}
    labels = {
        "off": "off (metrics only)",
        "traced": "metrics + tracing",
        "full": "metrics + tracing + access log",
    }
    rows = [
        f"| {labels[mode]} | {statistics.median(values):.0f} | "
        f"{', '.join(f'{v:.0f}' for v in values)} |"
        for mode, values in results.items()
    ]

    def kept_line(mode: str) -> str:
        return (
            f"**{kept[mode]:.3f}** (median of the per-round ratios "
            f"{', '.join(f'{x:.3f}' for x in ratios[mode])})"
        )

    return "\n".join(
        [
            START,
            "## Telemetry overhead",
            "",
            f"`python -m bench.telemetry --rounds {args.rounds} --duration {args.duration:g}` "
            f"on {time.strftime('%Y-%m-%d')}, {machine()}. `single` (1 text "
            "a request, 64 connections, wrk). The servers take turns, and each traced or full "
            "run sits between two off runs: its ratio is to their mean.",
            "",
            "| telemetry | texts/s (median) | rounds |",
            "| --- | --- | --- |",
            *rows,
            "",
            f"Metrics plus tracing (the issue's full telemetry) keep {kept_line('traced')} of "
            "the throughput; the target is at least 0.95. With the access log as well, "
            f"{kept_line('full')}. Tracing: a server span a request, and a batch and an engine "
            "span a batch, exported through a BatchSpanProcessor to an in-process exporter; "
            "the access log: one JSON line a request, to a file.",
            END,
            "",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--serve-traced", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--access-log", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_traced:
        serve_traced(args.serve_traced, args.access_log)
        return
    block = section(measure(args), args)
    print(block)
    previous = args.out.read_text() if args.out.exists() else ""
    args.out.write_text(splice(previous, block, START, END))


if __name__ == "__main__":
    main()
