"""Side by side: the raw-engine limit, inferline and its peers, per ../shared/BENCH.md.

    python -m bench.compare [--rounds 3] [--duration 10] [--peers seed,litserve,...]
                            [--skip-install] [--smoke]

Peers (bench/peers/) are the seed design (FastAPI, one synchronous model call per request),
LitServe, MLServer, Ray Serve and BentoML, each in its own virtual environment under
bench/.venvs/<peer>, created here from PyPI with the versions pinned in bench/systems.py
(skipped, and said so, when the install or the start fails). All serve the same int8 ONNX file
and tokenizer.json as inferline's ``sentiment`` model, through ``POST /predict``.

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
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import DEFAULT_DATA, ROOT, machine, raw_limit, splice
from bench.measure import Comparison, measure_system, write_bodies
from bench.progress import Progress
from bench.report import plots, section, summary
from bench.systems import PEER_NAMES, PEERS, RESULTS, Peer, ensure_venv
from inferline.config import Settings


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

        def raw() -> float:
            # The first run searches the configurations, later ones run the best alone
            # (bench/run.py says why).
            with progress.step("raw engine"):
                value, config = raw_limit(
                    graph, plain, cmp.raw_config[0] if cmp.raw_config else None
                )
            cmp.raw.append(value)
            cmp.raw_config.append(config)
            progress.say(f"raw engine: {value:.0f} texts/s ({config})")
            return value

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
                    result = measure_system(name, system, bodies, args, cmp, raw=raw)
                except (RuntimeError, subprocess.CalledProcessError, OSError) as exc:
                    detail = exc.stderr if isinstance(exc, subprocess.CalledProcessError) else exc
                    progress.say(f"{name} failed: {detail}")
                    if system is None:
                        raise
                    cmp.skipped[name] = f"failed in round {r + 1}: {detail}"
                    continue
                cmp.systems.setdefault(name, []).append(result)
    for name in cmp.skipped:
        cmp.systems.pop(name, None)
    return cmp


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
