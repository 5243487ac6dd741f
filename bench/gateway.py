"""Gateway overhead: a client → gateway inferline → OipEngine → backend inferline, against
the same client → backend, on the `multi` workload (`/predict`, 16 texts a request, 8
connections, wrk).

    python -m bench.gateway [--rounds 3] [--duration 10] [--protocol http grpc] [--out FILE]

The backend serves both models on ONNX Runtime; the gateway runs no model: its models
config sends both through OipEngine to the backend. Both processes run throughout, and
each round measures the backend directly (A) and through the gateway (B), in alternating
order (AB, BA, AB, ...) so that the machine's drift falls on both alike: first at
saturation (8 connections: throughput, and p50 with the queueing that saturation brings),
then with 1 connection (p50 without queueing: what the gateway adds to one request).
Figures are medians over rounds; the throughput ratio and the added p50 are taken within
each round first. The CPU that each process used during B is given per request. The
gateway, the backend and wrk share the machine's cores.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import DEFAULT_DATA, ROOT, WrkResult, machine, row, splice, wrk
from bench.run import start_server, write_bodies

START, END = "<!-- gateway:start -->", "<!-- gateway:end -->"
CONNECTIONS = 8
TEXTS_PER_REQUEST = 16


@dataclass
class Result:
    direct: list[WrkResult] = field(default_factory=list)
    gateway: list[WrkResult] = field(default_factory=list)
    direct_1: list[WrkResult] = field(default_factory=list)  # one connection
    gateway_1: list[WrkResult] = field(default_factory=list)
    gateway_cpu_ms: list[float] = field(default_factory=list)  # per request
    backend_cpu_ms: list[float] = field(default_factory=list)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(protocol: str, bodies: Path, args: argparse.Namespace, tmp: Path) -> Result:
    port = 19000 + os.getpid() % 500 * 2
    backend, _ = start_server(port, {})
    upstream = f"http://127.0.0.1:{port}" if protocol == "http" else f"127.0.0.1:{port + 1}"
    config = tmp / f"models-{protocol}.toml"
    config.write_text(
        "".join(
            f'[models.{name}]\nengine = "oip"\nurl = "{upstream}"\nprotocol = "{protocol}"\n\n'
            for name in ("sentiment", "embedding")
        )
    )
    gateway, _ = start_server(port + 2, {"INFERLINE_MODELS_CONFIG": str(config)})
    result = Result()
    try:
        direct_url = f"http://127.0.0.1:{port}/predict"
        gateway_url = f"http://127.0.0.1:{port + 2}/predict"
        for url in (direct_url, gateway_url):  # warm-up: connections, caches, batch sizes
            wrk(url, bodies, CONNECTIONS, 2, TEXTS_PER_REQUEST)
        for r in range(args.rounds):
            order = ("direct", "gateway") if r % 2 == 0 else ("gateway", "direct")
            for which in order:
                url = direct_url if which == "direct" else gateway_url
                light = wrk(url, bodies, 1, args.duration / 2, TEXTS_PER_REQUEST)
                (result.direct_1 if which == "direct" else result.gateway_1).append(light)
            for which in order:
                if which == "direct":
                    result.direct.append(
                        wrk(direct_url, bodies, CONNECTIONS, args.duration, TEXTS_PER_REQUEST)
                    )
                    continue
                g0, b0 = cpu_seconds(gateway.pid), cpu_seconds(backend.pid)
                run = wrk(gateway_url, bodies, CONNECTIONS, args.duration, TEXTS_PER_REQUEST)
                g1, b1 = cpu_seconds(gateway.pid), cpu_seconds(backend.pid)
                requests = max(run.texts_per_s * args.duration / TEXTS_PER_REQUEST, 1)
                result.gateway.append(run)
                result.gateway_cpu_ms.append(1e3 * (g1 - g0) / requests)
                result.backend_cpu_ms.append(1e3 * (b1 - b0) / requests)
            d, g = result.direct[-1], result.gateway[-1]
            print(
                f"{protocol} round {r + 1}: direct {d.texts_per_s:.0f} texts/s p50 "
                f"{d.p50_ms:.1f} ms; gateway {g.texts_per_s:.0f} texts/s p50 {g.p50_ms:.1f} ms",
                file=sys.stderr,
                flush=True,
            )
    finally:
        for proc in (gateway, backend):
            proc.terminate()
            proc.wait(30)
    runs = result.direct + result.gateway + result.direct_1 + result.gateway_1
    bad = sum(w.non_2xx for w in runs)
    if bad:
        raise RuntimeError(f"{bad} responses were not 2xx")
    return result


def ratios(r: Result) -> list[float]:
    """Gateway over direct throughput, round by round."""
    return [g.texts_per_s / d.texts_per_s for d, g in zip(r.direct, r.gateway, strict=True)]


def report(results: dict[str, Result], args: argparse.Namespace) -> str:
    med = statistics.median
    lines = [
        START,
        f"Generated by `python -m bench.gateway --rounds {args.rounds} --duration "
        f"{args.duration:g}` on {time.strftime('%Y-%m-%d')}, {machine()}. No GPU.",
        "",
        row(
            "upstream protocol",
            "direct texts/s",
            "gateway texts/s",
            "throughput ratio",
            "p50 ms, 8 conns: direct / gateway (added)",
            "p50 ms, 1 conn: direct / gateway (added)",
            "gateway p99 ms, 8 conns",
            "CPU per request: gateway / backend",
        ),
        row(*["---"] * 8),
    ]
    for protocol, r in results.items():
        direct_tps, gateway_tps = (
            med(w.texts_per_s for w in r.direct),
            med(w.texts_per_s for w in r.gateway),
        )
        direct_p50, gateway_p50 = med(w.p50_ms for w in r.direct), med(w.p50_ms for w in r.gateway)
        light_direct, light_gateway = (
            med(w.p50_ms for w in r.direct_1),
            med(w.p50_ms for w in r.gateway_1),
        )
        # A round's two runs are adjacent in time: the ratio and the added latency are taken
        # within each round, then their median (the host's speed flips between rounds).
        added = med(g.p50_ms - d.p50_ms for d, g in zip(r.direct_1, r.gateway_1, strict=True))
        lines.append(
            row(
                protocol,
                f"{direct_tps:.0f}",
                f"{gateway_tps:.0f}",
                f"{med(ratios(r)):.2f}",
                f"{direct_p50:.1f} / {gateway_p50:.1f} ({gateway_p50 - direct_p50:+.1f})",
                f"{light_direct:.1f} / {light_gateway:.1f} ({added:+.1f})",
                f"{med(w.p99_ms for w in r.gateway):.1f}",
                f"{med(r.gateway_cpu_ms):.2f} / {med(r.backend_cpu_ms):.2f} ms",
            )
        )
    lines += [
        "",
        "Rounds (texts/s, direct / gateway): "
        + "; ".join(
            f"{p} "
            + ", ".join(
                f"{d.texts_per_s:.0f} / {g.texts_per_s:.0f}"
                for d, g in zip(r.direct, r.gateway, strict=True)
            )
            for p, r in results.items()
        )
        + ".",
        "",
        "Throughput ratio by round: "
        + "; ".join(f"{p} " + ", ".join(f"{x:.2f}" for x in ratios(r)) for p, r in results.items())
        + ".",
        END,
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per run")
    parser.add_argument("--protocol", nargs="+", choices=["http", "grpc"], default=["http"])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "engines.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        files, _ = write_bodies(args.data, tmp)
        results = {p: measure(p, files["multi"], args, tmp) for p in args.protocol}
    block = report(results, args)
    print(block)
    if args.out.exists():
        args.out.write_text(splice(args.out.read_text(), block, START, END))


if __name__ == "__main__":
    main()
