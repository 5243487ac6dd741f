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
import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from bench.common import (
    DEFAULT_DATA,
    ROOT,
    WrkResult,
    keep_marked,
    machine,
    raw_limit,
    row,
    rss_mb,
    run_child,
    wrk,
)
from bench.loadgen import run_open_loop
from inferline.config import Settings


@dataclass(frozen=True)
class Workload:
    name: str
    label: str
    path: str
    connections: int
    texts_per_request: int
    reference: str  # which raw limit it is compared with: "sentiment" or "embedding"
    body: Callable[[list[str]], object]


WORKLOADS = [
    Workload(
        "single",
        "`/predict`, 1 text, 64 conns",
        "/predict",
        64,
        1,
        "sentiment",
        lambda t: {"text": t[0]},
    ),
    Workload(
        "multi",
        "`/predict`, 16 texts, 8 conns",
        "/predict",
        8,
        16,
        "sentiment",
        lambda t: {"texts": t},
    ),
    Workload(
        "oip_rest",
        "OIP REST infer, 16 texts, 8 conns",
        "/v2/models/sentiment/infer",
        8,
        16,
        "sentiment",
        lambda t: {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [len(t)], "data": t}]},
    ),
    Workload(
        "openai",
        "`/v1/embeddings`, 16 texts, 8 conns",
        "/v1/embeddings",
        8,
        16,
        "embedding",
        lambda t: {"model": "all-MiniLM-L6-v2", "input": t},
    ),
]
GRPC = "grpc"  # OIP gRPC ModelInfer, 16 texts, 8 callers (bench.grpc_load)


@dataclass
class Run:
    raw: dict[str, list[float]] = field(default_factory=lambda: {"sentiment": [], "embedding": []})
    raw_config: dict[str, str] = field(default_factory=dict)
    results: dict[str, list[WrkResult]] = field(default_factory=dict)
    ratios: dict[str, list[float]] = field(default_factory=dict)
    padding: list[float] = field(default_factory=list)
    cold_start_s: float = 0.0
    rss_mb: float = 0.0
    latency: dict[str, float] = field(default_factory=dict)


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


def start_server(
    port: int,
    env: dict[str, str],
    command: list[str] | None = None,
    log: Path | None = None,
) -> tuple[subprocess.Popen[bytes], float]:
    """``inferline serve`` (or ``command``) on ``port``; returns once it is ready."""
    started = time.monotonic()
    command = command or [
        str(ROOT / ".venv" / "bin" / "inferline"),
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--grpc-port",
        str(port + 1),
    ]
    with log.open("ab") if log else open(os.devnull, "wb") as out:
        proc = subprocess.Popen(
            command, env={**os.environ, **env}, stdout=out, stderr=out, cwd=ROOT
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


def write_bodies(data: Path, tmp: Path) -> tuple[dict[str, Path], Path]:
    texts = [json.loads(line)["text"] for line in data.open()]
    plain = tmp / "texts.jsonl"
    plain.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    files = {}
    for w in WORKLOADS:
        n = w.texts_per_request
        path = tmp / f"{w.name}.jsonl"
        path.write_text(
            "".join(
                json.dumps(w.body(texts[i : i + n])) + "\n" for i in range(0, len(texts) - n + 1, n)
            )
        )
        files[w.name] = path
    return files, plain


def grpc_load(port: int, texts: Path, duration: float) -> WrkResult:
    out, cpu = run_child(
        [
            sys.executable,
            "-m",
            "bench.grpc_load",
            f"127.0.0.1:{port}",
            str(texts),
            "--duration",
            str(duration),
        ]
    )
    data = json.loads(out)
    return WrkResult(data["texts_per_s"], data["p50_ms"], data["p99_ms"], 0, cpu)


def benchmark(args: argparse.Namespace) -> Run:
    settings = Settings()
    graphs = {
        "sentiment": settings.model_dir / "sentiment.int8.onnx",
        "embedding": settings.model_dir / "model.int8.onnx",
    }
    run = Run()
    port = 18000 + os.getpid() % 1000
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as tmp_dir:
        files, texts = write_bodies(args.data, Path(tmp_dir))
        proc, run.cold_start_s = start_server(port, {})
        try:
            wrk(base + "/predict", files["single"], 64, 2)  # warm-up
            run.rss_mb = rss_mb(proc.pid)
            latest: dict[str, float] = {}

            def raw(graph: str) -> float:
                # The first measurement searches the configurations (bench/raw.py); later
                # ones run the best alone, so the raw runs around a workload stay short and
                # close to it: this machine's speed flips by up to 20% between minutes.
                value, run.raw_config[graph] = raw_limit(
                    graphs[graph], texts, run.raw_config.get(graph)
                )
                run.raw[graph].append(value)
                latest[graph] = value
                return value

            for r in range(args.rounds):
                # Each workload sits between two raw measurements of its graph, and its ratio
                # is to their mean: the machine's speed drifts by several percent per minute.
                jobs: list[tuple[str, str, Callable[[], WrkResult]]] = [
                    (
                        w.name,
                        w.reference,
                        functools.partial(
                            wrk,
                            base + w.path,
                            files[w.name],
                            w.connections,
                            args.duration,
                            w.texts_per_request,
                        ),
                    )
                    for w in WORKLOADS
                ]
                jobs.append(
                    (
                        GRPC,
                        "sentiment",
                        functools.partial(grpc_load, port + 1, texts, args.duration),
                    )
                )
                for name, graph, job in jobs:
                    if args.only and name not in args.only:
                        continue
                    before = latest.get(graph) or raw(graph)
                    t0, p0 = counters(base)
                    result = job()
                    t1, p1 = counters(base)
                    after = raw(graph)
                    run.results.setdefault(name, []).append(result)
                    run.ratios.setdefault(name, []).append(
                        result.texts_per_s / ((before + after) / 2)
                    )
                    if name == "single":
                        run.padding.append((t1 - t0 + p1 - p0) / max(t1 - t0, 1))
                print(
                    f"round {r + 1}: "
                    + ", ".join(f"{k} {v[-1]:.2f}" for k, v in run.ratios.items()),
                    file=sys.stderr,
                    flush=True,
                )
            if "single" not in run.results:
                return run
            rate = 0.5 * statistics.median(w.texts_per_s for w in run.results["single"])
            bodies = [line.encode() for line in files["single"].read_text().splitlines()]
            open_loop = run_open_loop(
                "127.0.0.1", port, path="/predict", bodies=bodies, rate=rate, duration=args.duration
            )
            lat = sorted(open_loop.latencies)
            run.latency = {
                "rate": rate,
                "p50_ms": 1e3 * lat[len(lat) // 2],
                "p90_ms": 1e3 * lat[int(len(lat) * 0.9)],
                "p99_ms": 1e3 * lat[int(len(lat) * 0.99)],
                "errors": open_loop.errors
                + sum(len(v) for k, v in open_loop.by_status.items() if k != 200),
            }
            run.rss_mb = max(run.rss_mb, rss_mb(proc.pid))
        finally:
            proc.terminate()
            proc.wait(30)
    return run


def report(run: Run, args: argparse.Namespace) -> str:
    raw = {k: statistics.median(v) for k, v in run.raw.items()}
    med = {
        k: (
            statistics.median(w.texts_per_s for w in v),
            statistics.median(w.p50_ms for w in v),
            statistics.median(w.p99_ms for w in v),
            statistics.median(w.cpu_s for w in v) / args.duration / (os.cpu_count() or 1),
        )
        for k, v in run.results.items()
    }
    labels = {w.name: (w.label, w.reference) for w in WORKLOADS}
    labels[GRPC] = ("OIP gRPC ModelInfer, 16 texts, 8 callers", "sentiment")
    lat = run.latency
    lines = [
        "# Benchmarks",
        "",
        f"Generated by `python -m bench.run --rounds {args.rounds} "
        f"--duration {args.duration:g}` on {time.strftime('%Y-%m-%d')}, {machine()}. No GPU.",
        "",
        "Method (../shared/BENCH.md): every figure is the median of the rounds. Within a round",
        "each workload runs between two measurements of the raw engine on its graph, and its",
        "ratio is to their mean, since this shared machine's speed drifts, by up to 20%",
        "from one minute to the next. The raw limit is texts into ONNX Runtime with no server,",
        "timed from tokenisation, at the best configuration, which the graph's first",
        "measurement searches for (each configuration twice, forwards then backwards); later",
        "ones run it alone "
        f"(sentiment: {run.raw_config['sentiment']}; embedding: {run.raw_config['embedding']}).",
        "HTTP load comes from wrk (one thread); gRPC load from `bench/grpc_load.py` (Python,",
        "grpc.aio). Both share the 2 cores with the server; their CPU share is in the table.",
        "",
        "## Service against the raw engine (int8)",
        "",
        row("workload", "texts/s", "ratio to raw limit", "p50 ms", "p99 ms", "load generator CPU"),
        row(*["---"] * 6),
        row("raw ONNX Runtime, sentiment graph", f"{raw['sentiment']:.0f}", "1.00", "", "", ""),
        row("raw ONNX Runtime, embedding graph", f"{raw['embedding']:.0f}", "1.00", "", "", ""),
    ]
    for name, (tps, p50, p99, cpu) in med.items():
        label, _ = labels[name]
        lines.append(
            row(
                label,
                f"{tps:.0f}",
                # As the method says: each round's ratio to the raw runs around it, then the
                # median (the median texts/s over the median raw run drifts with the machine).
                f"{statistics.median(run.ratios[name]):.2f}",
                f"{p50:.1f}",
                f"{p99:.1f}",
                f"{100 * cpu:.0f}%",
            )
        )
    lines += [
        "",
        f"Open-loop latency on `/predict` at 50% of the `single` maximum ({lat['rate']:.0f} "
        f"requests/s): p50 {lat['p50_ms']:.1f} ms, p90 {lat['p90_ms']:.1f} ms, "
        f"p99 {lat['p99_ms']:.1f} ms, {lat['errors']:.0f} errors.",
        "",
        f"Cold start (process start to ready, model already built): {run.cold_start_s:.2f} s. "
        f"RSS after warm-up: {run.rss_mb:.0f} MB (both graphs loaded).",
        "",
        "Padding ratio on `single` (padded tokens / real tokens): "
        f"{statistics.median(run.padding):.3f}.",
        "",
        "Sentiment graph cost against the plain encoder (raw engine, same texts): "
        f"{raw['embedding'] / raw['sentiment']:.2f}x the time per text.",
        "",
        "Rounds (texts/s): raw sentiment "
        + ", ".join(f"{x:.0f}" for x in run.raw["sentiment"])
        + "; raw embedding "
        + ", ".join(f"{x:.0f}" for x in run.raw["embedding"])
        + "; "
        + "; ".join(
            f"{k} " + ", ".join(f"{w.texts_per_s:.0f}" for w in v) for k, v in run.results.items()
        )
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
    parser.add_argument(
        "--only", nargs="*", default=[], help="workloads to run (a quick look; writes no report)"
    )
    args = parser.parse_args()
    run = benchmark(args)
    if args.only:
        for name, results in run.results.items():
            tps = statistics.median(r.texts_per_s for r in results)
            print(f"{name}: {tps:.0f} texts/s, {statistics.median(run.ratios[name]):.2f} of raw")
        return
    text = report(run, args)
    # Keep the sections that bench.compare, bench.telemetry and bench.gpu_report write here.
    previous = args.out.read_text() if args.out.exists() else ""
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(keep_marked(text, previous))
    print(text)


if __name__ == "__main__":
    main()
