"""The `overload` scenario: goodput (successful texts/s) at 1x, 2x and 5x capacity.

    python -m bench.overload [--duration 15] [--rounds 3] [--capacity N] [--api-key KEY]

Capacity is the `single` maximum measured with wrk (64 connections, 5 s) right before each
1x run, and the 2x and 5x runs that follow use it: this shared host's speed drifts, and a
capacity measured once at the start leaves later 1x runs below capacity when the host
speeds up (no refusals, goodput capped at the offered load) and over it when it slows
down. `--capacity` fixes it instead.
The server runs with a queue of 128 texts and the client holds 512 connections. With
`--api-key` the server requires that key (as deployed, docs/deployment.md) and every request
carries it.
Load is open loop (bench/loadgen.py) in its own process, 1 text per request, so refusals
are visible as 429s rather than hidden as client back-off. The generator shares the 2 cores;
its actual send rate is reported beside the target.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import statistics
import sys
import tempfile
from pathlib import Path

import uvloop

from bench.common import DEFAULT_DATA, run_child, wrk
from bench.loadgen import open_loop
from bench.run import start_server, write_bodies

# More connections than the queue holds, so that excess load reaches the server and is
# refused there, as it would be with many real clients, instead of waiting in the client.
CONNECTIONS = 512
QUEUE = 128  # about 0.1 s of work at capacity: the latency budget of a synchronous API


def _auth(api_key: str) -> list[str]:
    return [f"Authorization: Bearer {api_key}"] if api_key else []


def offered(
    port: int, bodies: list[bytes], rate: float, duration: float, api_key: str = ""
) -> dict[str, float]:
    result = uvloop.run(
        open_loop(
            "127.0.0.1",
            port,
            path="/predict",
            bodies=bodies,
            rate=rate,
            duration=duration,
            connections=CONNECTIONS,
            headers=_auth(api_key),
        )
    )
    ok = sorted(result.by_status.get(200, []))
    refused = sorted(result.by_status.get(429, []))
    return {
        "target": rate,
        "sent_per_s": result.sent / duration,
        "goodput": len(ok) / result.elapsed,
        "ok_p99_ms": 1e3 * ok[int(0.99 * len(ok))] if ok else float("nan"),
        "refused": len(refused),
        "refused_p99_ms": 1e3 * refused[int(0.99 * len(refused))] if refused else float("nan"),
        "expired": len(result.by_status.get(504, [])),
        "errors": result.errors,
    }


def _cpu_s(pid: int) -> tuple[float, float]:
    """CPU seconds that process ``pid`` has used: all its threads, and its main thread (the
    server's event loop)."""

    def of(stat: str) -> float:
        fields = Path(stat).read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    return of(f"/proc/{pid}/stat"), of(f"/proc/{pid}/task/{pid}/stat")


def child(args: argparse.Namespace) -> None:
    bodies = [line.encode() for line in Path(args.bodies).read_text().splitlines()]
    print(json.dumps(offered(args.port, bodies, args.rate, args.duration, args.api_key)))


FACTORS = (1, 2, 5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--capacity", type=float, default=0.0)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument(
        "--api-key", default="", help="serve with this API key required, and send it"
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--rate", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--bodies", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    port = 19000
    runs: dict[int, list[dict[str, float]]] = {factor: [] for factor in FACTORS}
    capacities: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        files, _ = write_bodies(args.data, Path(tmp))
        env = {"INFERLINE_MAX_QUEUE_ITEMS": str(QUEUE)}
        if args.api_key:
            env["INFERLINE_API_KEYS"] = args.api_key
        proc, _ = start_server(port, env)
        url, auth = f"http://127.0.0.1:{port}/predict", _auth(args.api_key)
        try:

            def load(factor: int, capacity: float) -> None:
                before = _cpu_s(proc.pid)
                command = [sys.executable, "-m", "bench.overload", "--child", "--port", str(port)]
                command += ["--rate", str(factor * capacity), "--duration", str(args.duration)]
                command += ["--api-key", args.api_key]
                out, client_cpu = run_child([*command, "--bodies", str(files["single"])])
                row = json.loads(out)
                row["client_cores"] = client_cpu / args.duration
                after = _cpu_s(proc.pid)
                row["server_cores"], row["loop_cores"] = (
                    (b - a) / args.duration for a, b in zip(before, after, strict=True)
                )
                runs[factor].append(row)
                print(f"{factor}x: {row}", file=sys.stderr, flush=True)

            def at_capacity() -> float:
                """A 1x run at the capacity measured just before it; returns that capacity."""
                capacity = (
                    args.capacity or wrk(url, files["single"], 64, 5, headers=auth).texts_per_s
                )
                capacities.append(capacity)
                load(1, capacity)
                return capacity

            # Each round's 2x and 5x sit between two 1x runs and are compared with their
            # mean: this shared machine's speed flips by up to 20% from minute to minute.
            capacity = at_capacity()
            for _ in range(args.rounds):
                load(2, capacity)
                load(5, capacity)
                capacity = at_capacity()
        finally:
            proc.terminate()
            proc.wait(30)
    print(report(capacities, runs, args))


def report(
    capacities: list[float], runs: dict[int, list[dict[str, float]]], args: argparse.Namespace
) -> str:
    base = [r["goodput"] for r in runs[1]]
    around = [(a + b) / 2 for a, b in itertools.pairwise(base)]
    measured = (
        "given"
        if args.capacity
        else "wrk before each 1x run: " + ", ".join(f"{c:.0f}" for c in capacities)
    )
    lines = [
        f"\n## Overload (capacity {statistics.median(capacities):.0f} texts/s on `single`, "
        f"{measured}; {args.rounds} rounds of {args.duration:g} s per load)\n",
        "Medians over the runs; goodput vs 1x is each round's goodput over the mean of the "
        "1x runs before and after it (their median; each round in brackets).\n",
        "| offered | sent/s | goodput texts/s | goodput vs 1x | 200 p99 ms | 429s | 429 p99 ms "
        "| 504s | errors | client CPU (cores) | server CPU (cores) | of it, event loop |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for factor in FACTORS:
        rows = runs[factor]
        if factor == 1:
            ratio = "1.00"
        else:
            each = [r["goodput"] / ref for r, ref in zip(rows, around, strict=True)]
            ratio = f"{statistics.median(each):.2f} ({', '.join(f'{x:.2f}' for x in each)})"

        def med(key: str, rows: list[dict[str, float]] = rows) -> float:
            return _median(rows, key)

        refused_p99 = med("refused_p99_ms")  # over the runs that refused anything
        lines.append(
            f"| {factor}x ({med('target'):.0f}/s) | {med('sent_per_s'):.0f} | "
            f"{med('goodput'):.0f} | {ratio} | {med('ok_p99_ms'):.0f} | {med('refused'):.0f} | "
            f"{'—' if math.isnan(refused_p99) else f'{refused_p99:.1f}'} | "
            f"{med('expired'):.0f} | {med('errors'):.0f} | "
            f"{med('client_cores'):.2f} | {med('server_cores'):.2f} | {med('loop_cores'):.2f} |"
        )

    def rise(key: str) -> float:
        return _median(runs[5], key) - _median(runs[1], key)

    rest = rise("server_cores") - rise("loop_cores")
    lines.append(
        f"\nFrom 1x to 5x the event loop's CPU rose by {rise('loop_cores'):.2f} cores and the "
        f"client's by {rise('client_cores'):.2f}; the rest of the server (the inference lanes) "
        f"had {-rest:.2f} cores {'fewer' if rest <= 0 else 'more'} (medians)."
    )
    return "\n".join(lines)


def _median(rows: list[dict[str, float]], key: str) -> float:
    values = [r[key] for r in rows if not math.isnan(r[key])]
    return statistics.median(values) if values else math.nan


if __name__ == "__main__":
    main()
