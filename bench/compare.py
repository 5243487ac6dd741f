"""Side by side: the raw-engine limit, inferline and its peers, per ../shared/BENCH.md.

    python -m bench.compare [--rounds 3] [--duration 10] [--peers seed,litserve,...]
                            [--skip-install] [--smoke]

Peers (bench/peers/) are the seed design (FastAPI, one synchronous model call per request),
LitServe, MLServer, Ray Serve and BentoML, each in its own virtual environment under
bench/.venvs/<peer>, created here from PyPI with the pinned versions below (skipped, and
said so, when the install or the start fails). All serve the same int8 ONNX file and
tokenizer.json as inferline's ``sentiment`` model, through ``POST /predict``.

Each round measures the raw engine (bench/raw.py, own process), then inferline, then the
peers in an order that rotates from round to round. Each system is started fresh (cold
start: spawn to the first 200 on /predict), warmed up, its memory taken (RSS and PSS summed
over its process tree), and then loaded with wrk on ``single`` (1 text a request, 64
connections) and ``multi`` (16 texts, 8 connections), and with an open-loop client
(bench/loadgen.py) at 100 texts/s and at 50% of inferline's ``single`` maximum. Figures are
medians over rounds; the raw limit is the median of its runs (one per round and one more at
the end).

Writes the "Side by side" section of docs/benchmarks.md (between its markers, nothing else),
docs/img/throughput.png, docs/img/latency_cdf.png and the raw figures as JSON in
bench/results/. ``--smoke`` runs one short round of the raw engine and inferline only, and
writes nothing under docs/ unless --out / --img-dir say where.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvloop

from bench.common import (
    DEFAULT_DATA,
    END,
    ROOT,
    START,
    WrkResult,
    descendants,
    machine,
    raw_limit,
    row,
    splice,
    tree_memory_mb,
    wrk,
)
from bench.loadgen import open_loop
from inferline.config import Settings
from inferline.loadtest.stats import percentile

PEERS_DIR = ROOT / "bench" / "peers"
VENVS = ROOT / "bench" / ".venvs"
RESULTS = ROOT / "bench" / "results"
LATENCY_RATE = 100.0  # texts/s, the load that every system sustains
# What every peer's environment has besides its framework: the versions inferline runs.
COMMON = ("onnxruntime==1.32.0", "tokenizers==0.23.3", "numpy==2.4.6")


@dataclass(frozen=True)
class Peer:
    name: str  # CLI name and venv folder
    label: str
    requirements: tuple[str, ...]
    command: Callable[[Path, int], list[str]]  # (venv, port) -> argv, run in bench/peers
    list_body: bool = False  # takes {"texts": [...]} only (BentoML's batchable API)


PEERS = [
    Peer(
        "seed",
        "seed design (FastAPI, no batching)",
        ("fastapi==0.165.0", "uvicorn[standard]==0.54.0", *COMMON),
        lambda venv, port: [str(venv / "bin" / "python"), "seed_app.py"],
    ),
    Peer(
        "litserve",
        "LitServe 0.2.19",
        ("litserve==0.2.19", *COMMON),
        lambda venv, port: [str(venv / "bin" / "python"), "litserve_app.py"],
    ),
    Peer(
        "mlserver",
        "MLServer 1.7.1",
        ("mlserver==1.7.1", *COMMON),
        lambda venv, port: [str(venv / "bin" / "mlserver"), "start", "mlserver_repo"],
    ),
    Peer(
        "rayserve",
        "Ray Serve 2.60.0",
        ("ray[serve]==2.60.0", *COMMON),
        lambda venv, port: [str(venv / "bin" / "python"), "rayserve_app.py"],
    ),
    Peer(
        "bentoml",
        "BentoML 1.4.40",
        ("bentoml==1.4.40", *COMMON),
        lambda venv, port: [
            str(venv / "bin" / "bentoml"),
            "serve",
            "bentoml_service:Sentiment",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        list_body=True,
    ),
]
PEER_NAMES = [p.name for p in PEERS]


# -- progress ---------------------------------------------------------------------------------


class Progress:
    """Timestamped lines on stderr; on a terminal, a ticking line while a step runs."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.tty = sys.stderr.isatty()

    def stamp(self) -> str:
        elapsed = int(time.monotonic() - self.started)
        return f"[{elapsed // 60:02d}:{elapsed % 60:02d}]"

    def say(self, text: str) -> None:
        print(f"{self.stamp()} {text}", file=sys.stderr, flush=True)

    @contextlib.contextmanager
    def step(self, text: str, seconds: float | None = None) -> Iterator[None]:
        if not self.tty:
            yield
            return
        done = threading.Event()
        began = time.monotonic()

        def tick() -> None:
            while not done.wait(0.5):
                spent = time.monotonic() - began
                left = f"{spent:4.0f}/{seconds:.0f} s" if seconds else f"{spent:4.0f} s"
                sys.stderr.write(f"\r{self.stamp()} {text} {left}\x1b[K")
                sys.stderr.flush()

        ticker = threading.Thread(target=tick, daemon=True)
        ticker.start()
        try:
            yield
        finally:
            done.set()
            ticker.join()
            sys.stderr.write("\r\x1b[K")


# -- peers' environments ----------------------------------------------------------------------


def ensure_venv(peer: Peer, skip_install: bool, progress: Progress) -> str | None:
    """Create or update bench/.venvs/<peer>; return why it cannot be used, or None."""
    venv = VENVS / peer.name
    stamp = venv / ".bench-requirements"
    wanted = "\n".join(peer.requirements) + "\n"
    if skip_install:
        return None if (venv / "bin" / "python").exists() else "no venv and --skip-install"
    if stamp.exists() and stamp.read_text() == wanted:
        return None
    log = RESULTS / "logs" / f"install-{peer.name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    progress.say(f"installing {peer.label} into {venv.relative_to(ROOT)} (log: {log})")
    with log.open("w") as out, progress.step(f"pip install {peer.name}"):
        steps = [
            [sys.executable, "-m", "venv", str(venv)],
            [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "-U", "pip"],
            [str(venv / "bin" / "python"), "-m", "pip", "install", *peer.requirements],
        ]
        for command in steps:
            if subprocess.run(
                command, check=False, stdout=out, stderr=subprocess.STDOUT
            ).returncode:
                return f"install failed ({' '.join(command[-3:])}); see {log}"
    stamp.write_text(wanted)
    return None


# -- systems ----------------------------------------------------------------------------------


@dataclass
class Running:
    proc: subprocess.Popen[bytes]
    url: str
    cold_start_s: float


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch(name: str, peer: Peer | None, log: Path) -> Running:
    """Start a system on free ports; return once /predict answers 200."""
    port = free_port()
    env = {**os.environ, "PEER_PORT": str(port), "PEER_MODEL_DIR": str(Settings().model_dir)}
    if peer is None:
        command = [sys.executable, "-m", "inferline.cli", "serve"]
        cwd = ROOT
        env |= {
            "INFERLINE_HOST": "127.0.0.1",
            "INFERLINE_PORT": str(port),
            "INFERLINE_GRPC_PORT": str(free_port()),
        }
    else:
        command = peer.command(VENVS / peer.name, port)
        cwd = PEERS_DIR
        env |= {
            "PYTHONPATH": str(PEERS_DIR),
            "VIRTUAL_ENV": str(VENVS / peer.name),
            "PATH": f"{VENVS / peer.name / 'bin'}:{os.environ.get('PATH', '')}",
            "MLSERVER_HOST": "127.0.0.1",
            "MLSERVER_HTTP_PORT": str(port),
            "MLSERVER_GRPC_PORT": str(free_port()),
            "MLSERVER_METRICS_PORT": str(free_port()),
            "BENTOML_DO_NOT_TRACK": "True",
            "RAY_USAGE_STATS_ENABLED": "0",
        }
    body = {"texts": ["warm up"]} if peer is not None and peer.list_body else {"text": "warm up"}
    url = f"http://127.0.0.1:{port}"
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with log.open("ab") as out:
        proc = subprocess.Popen(
            command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    running = Running(proc, url, 0.0)
    while True:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.post(url + "/predict", json=body, timeout=5).status_code == 200:
                running.cold_start_s = time.monotonic() - started
                return running
        if proc.poll() is not None or time.monotonic() - started > 180:
            stop(running)
            tail = log.read_text(errors="replace").splitlines()[-5:]
            raise RuntimeError(f"{name} did not start: " + " / ".join(tail))
        time.sleep(0.05)


def stop(running: Running) -> None:
    """SIGTERM the system's process tree, then SIGKILL whatever is left of it."""
    tree = descendants(running.proc.pid)
    for pid in tree:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        running.proc.wait(20)
    for pid in tree:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        running.proc.wait(5)


# -- measurements -----------------------------------------------------------------------------


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
    name: str, peer: Peer | None, bodies: Bodies, args: argparse.Namespace, cmp: Comparison
) -> dict[str, Any]:
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


def compare(args: argparse.Namespace, texts: list[str]) -> Comparison:
    progress: Progress = args.progress
    cmp = Comparison(labels={"inferline": "inferline"})
    peers: list[Peer] = []
    for peer in (p for p in PEERS if p.name in args.peers):
        reason = ensure_venv(peer, args.skip_install, progress)
        if reason:
            cmp.skipped[peer.name] = reason
            progress.say(f"skipping {peer.label}: {reason}")
        else:
            peers.append(peer)
            cmp.labels[peer.name] = peer.label
    graph = Settings().model_dir / "sentiment.int8.onnx"
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        bodies = write_bodies(texts, tmp)
        plain = tmp / "texts.jsonl"
        plain.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))

        def raw() -> None:
            with progress.step("raw engine"):
                value, config = raw_limit(graph, plain)
            cmp.raw.append(value)
            cmp.raw_config.append(config)
            progress.say(f"raw engine: {value:.0f} texts/s ({config})")

        for r in range(args.rounds):
            progress.say(f"round {r + 1} of {args.rounds}")
            raw()
            shift = r % max(len(peers), 1)
            order: list[Peer | None] = [None, *peers[shift:], *peers[:shift]]
            for system in order:
                name = "inferline" if system is None else system.name
                if name in cmp.skipped:
                    continue
                try:
                    result = measure_system(name, system, bodies, args, cmp)
                except (RuntimeError, subprocess.CalledProcessError, OSError) as exc:
                    detail = exc.stderr if isinstance(exc, subprocess.CalledProcessError) else exc
                    progress.say(f"{name} failed: {detail}")
                    if system is None:
                        raise
                    cmp.skipped[name] = f"failed in round {r + 1}: {detail}"
                    continue
                cmp.systems.setdefault(name, []).append(result)
        raw()
    for name in cmp.skipped:
        cmp.systems.pop(name, None)
    return cmp


# -- report -----------------------------------------------------------------------------------


def median_of(rounds: list[dict[str, Any]], *keys: str) -> float | None:
    values = []
    for r in rounds:
        value: Any = r
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        if isinstance(value, int | float):
            values.append(float(value))
    return statistics.median(values) if values else None


def summary(cmp: Comparison) -> dict[str, Any]:
    """Medians per system, and the ratios of the table."""
    raw = statistics.median(cmp.raw)
    systems: dict[str, dict[str, Any]] = {}
    for name, rounds in cmp.systems.items():
        entry: dict[str, Any] = {
            "label": cmp.labels[name],
            "cold_start_s": median_of(rounds, "cold_start_s"),
            "rss_mb": median_of(rounds, "rss_mb"),
            "pss_mb": median_of(rounds, "pss_mb"),
        }
        for workload in ("single", "multi", "latency_100", "latency_half"):
            metrics = ("texts_per_s", "p50_ms", "p90_ms", "p99_ms", "errors", "loadgen_cpu")
            values = {m: median_of(rounds, workload, m) for m in metrics}
            failed = [r[workload]["failed"] for r in rounds if "failed" in r.get(workload, {})]
            if failed:
                values["failed"] = failed[0]
            rate = median_of(rounds, workload, "rate")
            if rate is not None:
                values["rate"] = rate
            entry[workload] = values
        systems[name] = entry
    peers = [n for n in systems if n != "inferline"]
    best: dict[str, float] = {}
    for workload in ("single", "multi"):
        tps = [systems[p][workload]["texts_per_s"] or 0.0 for p in peers]
        if tps and max(tps) > 0:
            best[workload] = max(tps)
    p99s = [systems[p]["latency_100"]["p99_ms"] for p in peers]
    finite = [x for x in p99s if x is not None]
    return {
        "raw": raw,
        "raw_config": statistics.mode(cmp.raw_config),
        "best_peer": best,
        "best_peer_p99_100": min(finite) if finite else None,
        "systems": systems,
    }


def _f(value: float | None, spec: str = ".0f") -> str:
    return "" if value is None else format(value, spec)


def table(s: dict[str, Any]) -> list[str]:
    raw, best = s["raw"], s["best_peer"]
    lines = [
        row(
            "system",
            "workload",
            "texts/s",
            "ratio to raw limit",
            "ratio to best peer",
            "p50 / p90 / p99 ms",
            "RSS MB (PSS)",
            "cold start s",
        ),
        row(*["---"] * 8),
        row("raw ONNX Runtime (no server)", "texts in", f"{raw:.0f}", "1.00", "", "", "", ""),
    ]
    for e in s["systems"].values():
        first = True
        for workload, name in (
            ("single", "`single` (1 text, 64 conns)"),
            ("multi", "`multi` (16 texts, 8 conns)"),
            ("latency_100", "open loop, 100 texts/s"),
            ("latency_half", "open loop, 50% of inferline's max"),
        ):
            m = e[workload]
            tps = m.get("texts_per_s")
            label = f"open loop, {m['rate']:.0f}/s" if workload == "latency_half" else name
            if m.get("failed"):
                cells = [label, "—", "", "", m["failed"]]
            else:
                ratio_best = ""
                if workload in best and tps:
                    ratio_best = f"{tps / best[workload]:.2f}"
                elif workload == "latency_100" and s["best_peer_p99_100"] and m["p99_ms"]:
                    ratio_best = f"p99 {m['p99_ms'] / s['best_peer_p99_100']:.2f}x"
                cells = [
                    label,
                    _f(tps),
                    "" if workload.startswith("latency") or not tps else f"{tps / raw:.2f}",
                    ratio_best,
                    f"{_f(m['p50_ms'], '.1f')} / {_f(m['p90_ms'], '.1f')} / "
                    f"{_f(m['p99_ms'], '.1f')}",
                ]
            memory = f"{_f(e['rss_mb'])} ({_f(e['pss_mb'])})" if first else ""
            cold = _f(e["cold_start_s"], ".2f") if first else ""
            lines.append(row(e["label"] if first else "", *cells, memory, cold))
            first = False
    return lines


def targets(s: dict[str, Any]) -> list[str]:
    """The issue's targets against this run's figures."""
    sys_ = s["systems"]
    if "inferline" not in sys_:
        return []
    il, raw = sys_["inferline"], s["raw"]
    batching = [n for n in sys_ if n not in ("inferline", "seed")]
    others = [n for n in sys_ if n != "inferline"]

    def tps(name: str, workload: str) -> float:
        return float(sys_[name][workload]["texts_per_s"] or 0.0)

    checks: list[tuple[str, str, bool]] = [
        (
            "`single` ≥ 0.85x raw limit",
            f"{tps('inferline', 'single') / raw:.2f}x",
            tps("inferline", "single") >= 0.85 * raw,
        ),
        (
            "`multi` ≥ 0.90x raw limit",
            f"{tps('inferline', 'multi') / raw:.2f}x",
            tps("inferline", "multi") >= 0.90 * raw,
        ),
    ]
    if "seed" in sys_:
        ratio = tps("inferline", "single") / max(tps("seed", "single"), 1e-9)
        checks.append(("`single` ≥ 1.6x the seed design", f"{ratio:.2f}x", ratio >= 1.6))
    if batching:
        top = max(tps(n, "single") for n in batching)
        ratio = tps("inferline", "single") / max(top, 1e-9)
        checks.append(("`single` ≥ 3x the best batching peer", f"{ratio:.2f}x", ratio >= 3))
    if others:
        top = max(tps(n, "multi") for n in others)
        ratio = tps("inferline", "multi") / max(top, 1e-9)
        checks.append(("`multi` ≥ 1.1x every system", f"{ratio:.2f}x", ratio >= 1.1))
    best_p99, p99 = s["best_peer_p99_100"], il["latency_100"]["p99_ms"]
    if best_p99 and p99:
        ratio = p99 / best_p99
        checks.append(("p99 at 100 texts/s ≤ 0.5x the best peer's", f"{ratio:.2f}x", ratio <= 0.5))
    half = il["latency_half"].get("p99_ms")
    if half is not None:
        checks.append(("p99 at 50% of own max < 50 ms", f"{half:.1f} ms", half < 50))
    lines = [row("target", "figure", "met"), row("---", "---", "---")]
    lines += [row(what, figure, "yes" if met else "no") for what, figure, met in checks]
    return lines


def section(cmp: Comparison, s: dict[str, Any], args: argparse.Namespace, images: str) -> str:
    command = "python -m bench.compare" + (
        " --smoke"
        if args.smoke
        else f" --rounds {args.rounds} --duration {args.duration:g}"
        + ("" if set(args.peers) == set(PEER_NAMES) else f" --peers {','.join(args.peers)}")
    )
    lines = [
        START,
        "## Side by side",
        "",
        f"Generated by `{command}` on {time.strftime('%Y-%m-%d')}, {machine()}. No GPU.",
        "",
        "Every system serves the same int8 sentiment graph (`sentiment.int8.onnx`) and",
        "`tokenizer.json` on `POST /predict`, started fresh in each round (cold start: spawn",
        "to the first 200). Rounds alternate the systems (raw engine, inferline, then the",
        "peers in a rotating order); figures are medians over rounds. Throughput is wrk with",
        "one thread on the 2 shared cores; latency is an open-loop client (bench/loadgen.py)",
        "counting from each request's scheduled time, at 100 texts/s, which every system",
        f"sustains, and at 50% of inferline's `single` maximum ({_f(cmp.half_rate)}/s). A",
        "system whose own maximum is below an offered load is not run at it. Memory is summed",
        "over each system's processes after warm-up (inferline's includes its embedding graph,",
        "which the peers do not load). The raw limit is the median of "
        f"{len(cmp.raw)} runs ({s['raw_config']}).",
        "",
        *table(s),
        "",
        "Targets from issue 10, against this run:",
        "",
        *targets(s),
        "",
        f"![throughput by system]({images}/throughput.png)",
        "",
        f"![latency CDF at 100 texts/s]({images}/latency_cdf.png)",
        "",
        "Peers (bench/peers/, each in its own virtual environment, pinned in",
        "bench/compare.py): the seed design is FastAPI with a synchronous endpoint and 1 ONNX",
        "Runtime thread per call (its thread pool runs calls side by side); LitServe batches",
        "32 / 5 ms in one worker; MLServer batches adaptively (32 / 5 ms) with",
        "`parallel_workers: 0`, because its worker pool would run `/predict` (a custom handler)",
        "past the batcher; Ray Serve runs one replica with `@serve.batch` 32 / 5 ms and",
        "`max_ongoing_requests` 128; BentoML runs a batchable API (max batch 32) in one",
        'worker, whose `/predict` takes `{"texts": [...]}` since BentoML batches only',
        "list arguments. The batching peers run one batch at a time with 2 ONNX Runtime",
        "threads.",
    ]
    if cmp.skipped:
        lines += ["", "Skipped: " + "; ".join(f"{k}: {v}" for k, v in cmp.skipped.items()) + "."]
    rounds = "; ".join(
        f"{name} " + ", ".join(f"{r['single']['texts_per_s']:.0f}" for r in v)
        for name, v in cmp.systems.items()
    )
    lines += [
        "",
        "Rounds, `single` texts/s: raw " + ", ".join(f"{x:.0f}" for x in cmp.raw) + f"; {rounds}.",
        END,
    ]
    return "\n".join(lines) + "\n"


def plots(cmp: Comparison, s: dict[str, Any], directory: Path) -> list[Path]:
    from inferline.loadtest import plots as draw

    bars = {"raw engine\n(no server)": {"single": s["raw"], "multi": s["raw"]}}
    for name, e in s["systems"].items():
        bars[name] = {w: e[w]["texts_per_s"] or 0.0 for w in ("single", "multi")}
    title = "Throughput, int8 MiniLM-L6 sentiment, 2 CPU cores (median of rounds)"
    written = [draw.throughput(directory / "throughput.png", bars, title=title)]
    series = {
        f"{name} @100/s": [x for r in rounds for x in r["latency_100"].get("latencies_ms", [])]
        for name, rounds in cmp.systems.items()
    }
    if cmp.half_rate and "inferline" in cmp.systems:
        series[f"inferline @{cmp.half_rate:.0f}/s (50% of max)"] = [
            x for r in cmp.systems["inferline"] for x in r["latency_half"].get("latencies_ms", [])
        ]
    styles = {k: "--" for k in series if "50% of max" in k}
    written.append(
        draw.latency_cdf(
            directory / "latency_cdf.png",
            series,
            title="Latency CDF, open loop, 1 text a request",
            styles=styles,
        )
    )
    return written


# -- main -------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measurement")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of load before each")
    parser.add_argument(
        "--peers",
        default=",".join(PEER_NAMES),
        help=f"comma-separated, from {','.join(PEER_NAMES)} ('' for none)",
    )
    parser.add_argument("--skip-install", action="store_true", help="use bench/.venvs as they are")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="one short round of the raw engine and inferline only (CI); docs untouched",
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=None, help="default docs/benchmarks.md")
    parser.add_argument("--img-dir", type=Path, default=None, help="default docs/img")
    parser.add_argument("--json", type=Path, default=None, help="default bench/results/")
    args = parser.parse_args(argv)
    args.peers = [p for p in args.peers.replace(" ", "").split(",") if p]
    unknown = set(args.peers) - set(PEER_NAMES)
    if unknown:
        parser.error(f"unknown peers: {', '.join(sorted(unknown))}")
    if args.smoke:
        args.rounds, args.duration, args.warmup, args.peers = 1, 2.0, 1.0, []
    if args.rounds < 1 or args.duration <= 0:
        parser.error("--rounds must be at least 1 and --duration above 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.progress = Progress()
    texts = [json.loads(line)["text"] for line in args.data.open()]
    if args.smoke:
        texts = texts[:512]
    cmp = compare(args, texts)
    s = summary(cmp)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    json_path = args.json or RESULTS / f"compare-{stamp}.json"
    json_path.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "command": sys.argv,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": machine(),
        "rounds": args.rounds,
        "duration_s": args.duration,
        "raw": {"rounds": cmp.raw, "configs": cmp.raw_config},
        "half_rate": cmp.half_rate,
        "skipped": cmp.skipped,
        "summary": s,
        "systems": {
            name: [
                {
                    k: {x: y for x, y in v.items() if x != "latencies_ms"}
                    if isinstance(v, dict)
                    else v
                    for k, v in r.items()
                }
                for r in rounds
            ]
            for name, rounds in cmp.systems.items()
        },
    }
    json_path.write_text(json.dumps(record, indent=2) + "\n")
    out = args.out or (None if args.smoke else ROOT / "docs" / "benchmarks.md")
    img_dir = args.img_dir or (None if args.smoke else ROOT / "docs" / "img")
    if img_dir is not None:
        try:
            for path in plots(cmp, s, img_dir):
                args.progress.say(f"wrote {path}")
        except RuntimeError as exc:  # no matplotlib
            args.progress.say(f"no plots: {exc}")
    if out is not None:
        images = os.path.relpath(img_dir or ROOT / "docs" / "img", out.parent)
        block = section(cmp, s, args, images)
        previous = out.read_text() if out.exists() else "# Benchmarks\n"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(splice(previous, block))
        args.progress.say(f"wrote the side-by-side section of {out}")
        print(block)
    args.progress.say(f"wrote {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
