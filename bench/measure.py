"""Measuring one system: its request bodies, wrk throughput, open-loop latency, memory."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvloop

from bench.common import WrkResult, tree_memory_mb, wrk
from bench.loadgen import open_loop
from bench.progress import Progress
from bench.systems import RESULTS, Peer, launch, stop
from inferline.loadtest.stats import percentile

LATENCY_RATE = 100.0  # texts/s, the load that every system sustains


@dataclass
class Bodies:
    single: Path
    multi: Path
    single_list: Path  # {"texts": [t]}: for peers whose /predict takes lists only

    def for_single(self, peer: Peer | None) -> Path:
        return self.single_list if peer is not None and peer.list_body else self.single


def write_bodies(texts: list[str], tmp: Path) -> Bodies:
    def dump(name: str, bodies: Sequence[object]) -> Path:
        path = tmp / f"{name}.jsonl"
        path.write_text("".join(json.dumps(b) + "\n" for b in bodies))
        return path

    multi = [{"texts": texts[i : i + 16]} for i in range(0, len(texts) - 15, 16)]
    return Bodies(
        dump("single", [{"text": t} for t in texts]),
        dump("multi", multi),
        dump("single_list", [{"texts": [t]} for t in texts]),
    )


def latency(url: str, bodies: Path, rate: float, duration: float) -> dict[str, Any]:
    """Open loop at ``rate`` requests (of one text) a second."""
    port = int(url.rsplit(":", 1)[1])
    lines = [line.encode() for line in bodies.read_text().splitlines()]
    run = open_loop("127.0.0.1", port, path="/predict", bodies=lines, rate=rate, duration=duration)
    try:
        result = uvloop.run(asyncio.wait_for(run, timeout=3 * duration + 30))
    except TimeoutError:
        return {"rate": rate, "failed": "did not drain in time"}
    ms = sorted(1e3 * x for x in result.latencies)
    return {
        "rate": rate,
        "texts_per_s": len(ms) / result.elapsed if result.elapsed else 0.0,
        "p50_ms": percentile(ms, 50),
        "p90_ms": percentile(ms, 90),
        "p99_ms": percentile(ms, 99),
        "errors": result.errors + sum(len(v) for k, v in result.by_status.items() if k != 200),
        "latencies_ms": ms,
    }


def throughput(result: WrkResult, duration: float) -> dict[str, float]:
    return {
        "texts_per_s": result.texts_per_s,
        "p50_ms": result.p50_ms,
        "p90_ms": result.p90_ms,
        "p99_ms": result.p99_ms,
        "errors": result.non_2xx + result.errors,
        "loadgen_cpu": result.cpu_s / duration / (os.cpu_count() or 1),
    }


@dataclass
class Comparison:
    raw: list[float] = field(default_factory=list)
    raw_config: list[str] = field(default_factory=list)
    systems: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    half_rate: float | None = None


def measure_system(
    name: str,
    peer: Peer | None,
    bodies: Bodies,
    args: argparse.Namespace,
    cmp: Comparison,
    *,
    raw: Callable[[], float] | None = None,
) -> dict[str, Any]:
    """Start ``name``, measure it, stop it. With ``raw`` (which measures the raw engine), the
    throughput's ratios are to the mean of the raw run before this system and one run
    right after its throughput: this machine's speed flips by up to 20% between minutes."""
    progress: Progress = args.progress
    log = RESULTS / "logs" / f"{name}.log"
    with progress.step(f"{name}: starting"):
        running = launch(name, peer, log)
    try:
        single_bodies = bodies.for_single(peer)
        with progress.step(f"{name}: warm-up", args.warmup):
            wrk(running.url + "/predict", single_bodies, 64, args.warmup)
        rss, pss = tree_memory_mb(running.proc.pid)
        out: dict[str, Any] = {"cold_start_s": running.cold_start_s, "rss_mb": rss, "pss_mb": pss}
        progress.say(
            f"{name}: ready in {running.cold_start_s:.2f} s, RSS {rss:.0f} MB (PSS {pss:.0f})"
        )
        with progress.step(f"{name}: single", args.duration):
            result = wrk(running.url + "/predict", single_bodies, 64, args.duration, 1)
        out["single"] = throughput(result, args.duration)
        with progress.step(f"{name}: multi", args.duration):
            result = wrk(running.url + "/predict", bodies.multi, 8, args.duration, 16)
        out["multi"] = throughput(result, args.duration)
        raw_now = cmp.raw[-1]
        if raw is not None:
            raw_now = (raw_now + raw()) / 2
            for workload in ("single", "multi"):
                out[workload]["ratio"] = out[workload]["texts_per_s"] / raw_now
        progress.say(
            f"{name}: single {out['single']['texts_per_s']:.0f} texts/s "
            f"({out['single']['texts_per_s'] / raw_now:.2f} of raw), "
            f"multi {out['multi']['texts_per_s']:.0f} "
            f"({out['multi']['texts_per_s'] / raw_now:.2f})"
        )
        if peer is None:
            medians = [r["single"]["texts_per_s"] for r in cmp.systems.get(name, [])]
            cmp.half_rate = 0.5 * statistics.median([*medians, out["single"]["texts_per_s"]])
        rates = {"latency_100": LATENCY_RATE}
        if cmp.half_rate:
            rates["latency_half"] = cmp.half_rate
        for key, rate in rates.items():
            if out["single"]["texts_per_s"] < rate:
                out[key] = {"rate": rate, "failed": "over capacity (its single maximum is lower)"}
                progress.say(f"{name}: {key} skipped, over capacity at {rate:.0f}/s")
                continue
            with progress.step(f"{name}: open loop at {rate:.0f}/s", args.duration):
                out[key] = latency(running.url, single_bodies, rate, args.duration)
            if "failed" not in out[key]:
                progress.say(
                    f"{name}: {rate:.0f}/s p50 {out[key]['p50_ms']:.1f} ms, "
                    f"p90 {out[key]['p90_ms']:.1f} ms, p99 {out[key]['p99_ms']:.1f} ms, "
                    f"{out[key]['errors']} errors"
                )
        return out
    finally:
        stop(running)
