"""The `queue` workload: 10,000 jobs pre-loaded into Redis, timed to drain by 1 and 2 workers.

    python -m bench.queue [--jobs 10000] [--rounds 3]

For each worker count: start the workers (each an `inferline worker` process, model loaded,
blocked in XREADGROUP), stop them with SIGSTOP, load the jobs through the producer, then
resume them with SIGCONT and time from there to the last job acknowledged (the group's lag
and pending list both at zero). So the jobs are pre-loaded (../shared/BENCH.md) and the
producer's own CPU is not in the drain. The raw engine runs before and after each drain, and
the drain rate is given as a fraction of their mean; figures are medians over the rounds.
Then the end-to-end latency of single jobs on an idle system: enqueue, and poll for the
result.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis.asyncio as redis

from bench.common import DEFAULT_DATA, ROOT, raw_limit
from inferline.config import Settings
from inferline.queue.keys import QueueKeys
from inferline.queue.producer import Producer

PREFIX = "bench"
KEYS = QueueKeys(PREFIX)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_workers(count: int, url: str, logs: Path) -> list[subprocess.Popen[bytes]]:
    env = {
        **os.environ,
        "INFERLINE_REDIS_URL": url,
        "INFERLINE_QUEUE_PREFIX": PREFIX,
        "INFERLINE_WORKER_METRICS_PORT": "0",  # several workers on one host
    }
    procs = []
    for i in range(count):
        log = logs / f"worker-{count}-{i}.log"
        with log.open("wb") as out:
            procs.append(
                subprocess.Popen(
                    [str(ROOT / ".venv" / "bin" / "inferline"), "worker"],
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            )
    deadline = time.monotonic() + 60
    for i in range(count):
        log = logs / f"worker-{count}-{i}.log"
        while "reading" not in log.read_text(errors="replace"):
            if time.monotonic() > deadline:
                raise RuntimeError(log.read_text())
            time.sleep(0.05)
    return procs


async def drain(
    url: str, texts: list[str], jobs: int, workers: list[subprocess.Popen[bytes]]
) -> float:
    client = redis.Redis.from_url(url, decode_responses=True)
    producer = Producer(client, KEYS, 10 * jobs)
    for proc in workers:
        proc.send_signal(signal.SIGSTOP)
    for start in range(0, jobs, 1000):  # the producer's pipelined path, 1,000 at a time
        await producer.submit_many(
            [("sentiment", [texts[i % len(texts)]], None) for i in range(start, start + 1000)]
        )
    started = time.perf_counter()
    for proc in workers:
        proc.send_signal(signal.SIGCONT)
    while True:
        groups = {g["name"]: g for g in await client.xinfo_groups(KEYS.stream)}
        info = groups[KEYS.group]
        if info["lag"] == 0 and info["pending"] == 0:
            elapsed = time.perf_counter() - started
            await client.aclose()
            return elapsed
        await asyncio.sleep(0.02)


async def single_job_latency(url: str, text: str, rounds: int) -> list[float]:
    client = redis.Redis.from_url(url, decode_responses=True)
    producer = Producer(client, KEYS, 1000)
    latencies = []
    for _ in range(rounds):
        started = time.perf_counter()
        job_id, _ = await producer.submit("sentiment", [text])
        for _ in range(100_000):  # polled: nothing announces a stored result
            if await client.exists(KEYS.result(job_id)):
                break
            await asyncio.sleep(0.0005)
        latencies.append(time.perf_counter() - started)
        await asyncio.sleep(0.05)
    await client.aclose()
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args()
    texts = [json.loads(line)["text"] for line in args.data.open()]
    graph = Settings().model_dir / "sentiment.int8.onnx"
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server is not installed")
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        plain = tmp / "texts.jsonl"
        plain.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
        port = free_port()
        server = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", tmp_dir],
            stdout=subprocess.DEVNULL,
        )
        url = f"redis://127.0.0.1:{port}/0"
        rows = []
        try:
            time.sleep(0.5)
            for workers in (1, 2):
                procs = start_workers(workers, url, tmp)
                rates, ratios = [], []
                try:
                    for _ in range(args.rounds):
                        before, _ = raw_limit(graph, plain)
                        seconds = asyncio.run(drain(url, texts, args.jobs, procs))
                        after, _ = raw_limit(graph, plain)
                        rates.append(args.jobs / seconds)
                        ratios.append(rates[-1] / ((before + after) / 2))
                        print(
                            f"{workers} worker(s): {rates[-1]:.0f} jobs/s, {ratios[-1]:.3f} of raw",
                            file=sys.stderr,
                        )
                    rows.append((workers, rates, ratios))
                    if workers == 1:
                        lat = asyncio.run(single_job_latency(url, texts[1], 50))
                finally:
                    for p in procs:
                        p.terminate()
                        p.wait(30)
        finally:
            server.terminate()
            server.wait(10)
    print(f"\n## Queue (`python -m bench.queue --jobs {args.jobs} --rounds {args.rounds}`)\n")
    print(
        "| workers | jobs/s (1 text each), median | ratio to raw limit, median | ratios by round |"
    )
    print("| --- | --- | --- | --- |")
    for workers, rates, ratios in rows:
        each = ", ".join(f"{r:.3f}" for r in ratios)
        print(
            f"| {workers} | {statistics.median(rates):.0f} | {statistics.median(ratios):.3f} "
            f"| {each} |"
        )
    lat.sort()
    print(
        f"\nSingle job on an idle system, enqueue to result stored: p50 "
        f"{1e3 * statistics.median(lat):.1f} ms, p90 {1e3 * lat[int(0.9 * len(lat))]:.1f} ms "
        f"({len(lat)} jobs, polled every 0.5 ms)."
    )


if __name__ == "__main__":
    main()
