"""The CUDA path, checked and timed on a GPU machine (docs/benchmarks.md, "GPU").

    python -m bench.gpu MODEL_DIR TEXTS.jsonl [--duration 8] [--out gpu.json]

MODEL_DIR needs only the fp32 graphs (``model.onnx``, ``sentiment.onnx``), the tokenizer
and the manifest. In one run it:

1. checks that onnxruntime has the CUDA provider and that the fp32 graphs on it agree
   with the CPU provider (cosine of the embeddings, largest probability difference);
2. measures the raw-engine limit on the GPU (tokenise, sort, pad, run; no server);
3. starts ``inferline serve`` with ``INFERLINE_DEVICE=cuda``, checks that ``/metrics``
   carries the GPU gauges and that the process holds GPU memory, and runs `single`,
   `multi` and `latency` (50% of `single`) against it with ``inferline bench`` clients,
   once with the default batcher and once with larger GPU batches, recording each
   thread's CPU during `single`;
4. runs ``REPLICAS`` servers on the one GPU at once, each with its own clients.

The load generator is Python; closed-loop workloads run ``CLIENTS`` processes at once so
that one client's event loop is not the limit.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from inferline.engines.onnx import pad_batch, providers_for
from inferline.tokenizer import TextEncoder

CLIENTS = 4
REPLICAS = 3
REPLICA_CLIENTS = 3  # `single` clients per replica: one Python client tops out near 1,000/s
CONFIGS: dict[str, dict[str, str]] = {
    "defaults (batches of up to 16)": {},
    "GPU batches (up to 128 texts, 32k tokens)": {
        "INFERLINE_MAX_BATCH_SIZE": "128",
        "INFERLINE_MAX_BATCH_TOKENS": "32768",
    },
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def nvidia_smi(query: str) -> str:
    out = subprocess.run(
        ["nvidia-smi", query, "--format=csv,noheader"], check=False, capture_output=True, text=True
    )
    return out.stdout.strip()


def environment() -> dict[str, Any]:
    import onnxruntime as ort

    smi = nvidia_smi("--query-gpu=name,memory.total,driver_version")
    lines = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((line.split(":", 1)[1].strip() for line in lines if "model name" in line), "")
    return {
        "onnxruntime": ort.__version__,
        "cpu": cpu,
        "providers": ort.get_available_providers(),
        "gpu": smi,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }


def session(path: Path, device: str) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 0 if device == "cpu" else 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=providers_for(device))


def agreement(model_dir: Path, encoder: TextEncoder, texts: list[str]) -> dict[str, float]:
    """The fp32 graphs on CUDA against the CPU provider, on the same padded batch."""
    ids, mask = pad_batch(encoder.encode(texts))
    feeds = {"input_ids": ids, "attention_mask": mask}
    out: dict[str, float] = {}
    for name in ("model.onnx", "sentiment.onnx"):
        cpu = session(model_dir / name, "cpu").run(None, feeds)[0]
        gpu_session = session(model_dir / name, "cuda")
        assert gpu_session.get_providers()[0] == "CUDAExecutionProvider", name
        gpu = gpu_session.run(None, feeds)[0]
        if name == "model.onnx":
            cos = np.sum(cpu * gpu, axis=1) / (
                np.linalg.norm(cpu, axis=1) * np.linalg.norm(gpu, axis=1)
            )
            out["embedding_min_cosine"] = float(cos.min())
        else:
            out["probability_max_abs_diff"] = float(np.abs(cpu - gpu).max())
            out["label_agreement"] = float(np.mean(cpu.argmax(1) == gpu.argmax(1)))
    return out


def raw_gpu(model: Path, encoder: TextEncoder, texts: list[str]) -> dict[str, float]:
    """Texts/s from texts to probabilities, for a few lane and batch settings."""
    results: dict[str, float] = {}
    for lanes in (1, 2):
        sess = session(model, "cuda")
        for batch in (16, 64, 256):

            def run(chunk: list[Any], sess: Any = sess) -> None:
                ids, mask = pad_batch(chunk)
                sess.run(None, {"input_ids": ids, "attention_mask": mask})

            run(encoder.encode(texts[:batch]))  # warm-up of this shape family
            started = time.perf_counter()
            items = encoder.encode(texts)
            items.sort(key=lambda i: i.tokens)
            chunks = [items[i : i + batch] for i in range(0, len(items), batch)]
            with ThreadPoolExecutor(lanes) as pool:
                list(pool.map(run, chunks))
            rate = len(texts) / (time.perf_counter() - started)
            results[f"{lanes} lane(s), sorted batches of {batch}"] = rate
            log(f"raw GPU, {lanes} lane(s), batches of {batch}: {rate:,.0f} texts/s")
    return results


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bench_clients(
    url: str, workload: str, data: Path, duration: float, **kw: Any
) -> dict[str, Any]:
    """``inferline bench`` in ``clients`` processes at once; texts/s summed."""
    clients = kw.pop("clients", CLIENTS)
    cmd = [sys.executable, "-m", "inferline.cli", "bench", url, "--workload", workload]
    cmd += ["--duration", str(duration), "--data", str(data), "--json", "--quiet"]
    for key, value in kw.items():
        cmd += [f"--{key}", str(value)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for _ in range(clients)]
    summaries = [json.loads(p.communicate()[0])[0] for p in procs]
    return {
        "texts_per_s": sum(s["texts_per_s"] for s in summaries),
        "p50_ms": float(np.median([s["p50_ms"] for s in summaries])),
        "p99_ms": max(s["p99_ms"] for s in summaries),
        "non_2xx": sum(s["requests"] - s["ok"] for s in summaries),
        "errors": sum(s["errors"] for s in summaries),
        "clients": clients,
    }


def start(model_dir: Path, extra: dict[str, str]) -> tuple[subprocess.Popen[bytes], str, float]:
    """``inferline serve`` on CUDA; returns once it is ready, with its cold start."""
    port = free_port()
    env = {
        **os.environ,
        "INFERLINE_DEVICE": "cuda",
        "INFERLINE_MODEL_DIR": str(model_dir),
        "INFERLINE_PORT": str(port),
        "INFERLINE_GRPC_PORT": str(free_port()),
        "INFERLINE_ACCESS_LOG": "false",
        **extra,
    }
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "inferline.cli", "serve"], env=env)
    url = f"http://127.0.0.1:{port}"
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"inferline serve exited with {proc.returncode}")
        try:
            if httpx.get(url + "/health/ready", timeout=1).status_code == 200:
                return proc, url, time.monotonic() - started
        except httpx.TransportError:
            pass
        time.sleep(0.2)


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds of the event loop (the main thread) and of all the other threads."""
    out = {"event loop": 0.0, "other threads": 0.0}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        name = "event loop" if tid == str(pid) else "other threads"
        out[name] += (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")
    return out


def serve(model_dir: Path, data: Path, duration: float, extra: dict[str, str]) -> dict[str, Any]:
    proc, url, cold = start(model_dir, extra)
    try:
        answer = httpx.post(url + "/predict", json={"text": "Great value, works perfectly."})
        answer.raise_for_status()
        before = thread_cpu(proc.pid)
        single = bench_clients(url, "single", data, duration, connections=64 // CLIENTS)
        after = thread_cpu(proc.pid)
        single["thread_cores"] = {
            name: round((after[name] - before[name]) / duration, 2) for name in after
        }
        log(f"single: {single}")
        multi = bench_clients(url, "multi", data, duration, connections=2, clients=4)
        log(f"multi: {multi}")
        rate = 0.5 * single["texts_per_s"]
        latency = bench_clients(url, "latency", data, duration, rate=rate, clients=1)
        log(f"latency @ {rate:.0f}/s: {latency}")
        metrics = httpx.get(url + "/metrics").text
        gauges = [line for line in metrics.splitlines() if line.startswith("inferline_gpu_")]
        apps = nvidia_smi("--query-compute-apps=pid,used_memory")
        return {
            "cold_start_s": cold,
            "predict": answer.json(),
            "single": single,
            "multi": multi,
            "latency": latency | {"offered_per_s": rate},
            "gpu_gauges": gauges,
            "compute_apps": apps,
            "server_pid": proc.pid,
        }
    finally:
        proc.terminate()
        proc.wait(60)


def replicas(model_dir: Path, data: Path, duration: float, count: int) -> dict[str, Any]:
    """``count`` servers on the one GPU, each loaded by its own clients at once: what
    docs/deployment.md's several pods per GPU give."""
    servers = [start(model_dir, {}) for _ in range(count)]
    out: dict[str, Any] = {"replicas": count}
    try:
        for workload, connections, clients in (("single", 16, REPLICA_CLIENTS), ("multi", 2, 2)):

            def load(
                url: str, workload: str = workload, c: int = connections, n: int = clients
            ) -> Any:
                return bench_clients(url, workload, data, duration, connections=c, clients=n)

            with ThreadPoolExecutor(count) as pool:
                parts = list(pool.map(load, [url for _, url, _ in servers]))
            out[workload] = {
                "texts_per_s": sum(p["texts_per_s"] for p in parts),
                "p50_ms": float(np.median([p["p50_ms"] for p in parts])),
                "p99_ms": max(p["p99_ms"] for p in parts),
                "non_2xx": sum(p["non_2xx"] for p in parts),
                "errors": sum(p["errors"] for p in parts),
                "clients": sum(p["clients"] for p in parts),
                "per_replica": [round(p["texts_per_s"]) for p in parts],
            }
            log(f"{count} replicas, {workload}: {out[workload]}")
        out["compute_apps"] = nvidia_smi("--query-compute-apps=pid,used_memory")
    finally:
        for proc, _, _ in servers:
            proc.terminate()
        for proc, _, _ in servers:
            proc.wait(60)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("texts", type=Path)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--out", type=Path, default=Path("gpu.json"))
    args = parser.parse_args()
    report: dict[str, Any] = {"environment": environment()}
    log(f"environment: {report['environment']}")
    texts = [json.loads(line)["text"] for line in args.texts.open()]
    encoder = TextEncoder(args.model_dir / "tokenizer.json", 256)
    report["agreement"] = agreement(args.model_dir, encoder, texts[:256])
    log(f"CUDA against CPU: {report['agreement']}")
    report["raw"] = raw_gpu(args.model_dir / "sentiment.onnx", encoder, texts * 8)
    report["service"] = {}
    for label, extra in CONFIGS.items():
        log(f"service, {label}")
        report["service"][label] = serve(args.model_dir, args.texts, args.duration, extra)
        args.out.write_text(json.dumps(report, indent=2))
    log(f"{REPLICAS} replicas")
    report["replicas"] = replicas(args.model_dir, args.texts, args.duration, REPLICAS)
    args.out.write_text(json.dumps(report, indent=2))
    log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
