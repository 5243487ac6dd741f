"""The GPU section of docs/benchmarks.md, from a saved ``bench.gpu`` run.

    python -m bench.gpu_report bench/gpu-runs/RUN.json --commit REV [--out docs/benchmarks.md]

``bench.gpu`` runs where the GPU is; its JSON comes back here and is kept in
``bench/gpu-runs/``, so the section can be rebuilt from what was measured.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from bench.common import ROOT, row, splice

START, END = "<!-- gpu:start -->", "<!-- gpu:end -->"
WORKLOADS = (
    ("single", "`single` (1 text, 64 connections)"),
    ("multi", "`multi` (16 texts, 8 connections)"),
    ("latency", "`latency` (open loop, 50% of `single`)"),
)


def _gib(gauges: list[str], name: str) -> float:
    line = next(g for g in gauges if g.startswith(name))
    return float(line.rsplit(" ", 1)[1]) / 2**30


def section(run: dict[str, Any], source: str, commit: str) -> str:
    env, agree, raw = run["environment"], run["agreement"], run["raw"]
    best_label = max(raw, key=lambda k: raw[k])
    best = raw[best_label]
    gpu_name, gpu_memory, driver = (part.strip() for part in env["gpu"].split(","))
    lines = [
        START,
        f"## GPU ({gpu_name})",
        "",
        f"`python -m bench.gpu MODEL_DIR TEXTS --duration 8` on an {gpu_name} ({gpu_memory}, "
        f"driver {driver}) with {env['cpus']} CPU cores ({env['cpu']}), onnxruntime-gpu "
        f"{env['onnxruntime']} (CUDA 13), Python 3.12, commit {commit}; rendered from "
        f"`{source}` by `python -m bench.gpu_report`. The fp32 graphs (what "
        "`INFERLINE_PRECISION=auto` serves on CUDA); texts from the Amazon reviews set. "
        "Each figure is one run of 8 s, not a median: the GPU machine is lent for minutes.",
        "",
        "**The CUDA path works.** `providers_for('cuda')` preloaded CUDA and cuDNN from the "
        "nvidia-* wheels with no `LD_LIBRARY_PATH`, the sessions ran on "
        "`CUDAExecutionProvider`, and against the CPU provider on the same 256 padded "
        f"reviews the embeddings' lowest cosine was {agree['embedding_min_cosine']:.7f}, the "
        f"largest sentiment-probability difference {agree['probability_max_abs_diff']:.4f}, "
        f"and {100 * agree['label_agreement']:.0f}% of the labels agreed.",
        "",
        "Raw engine on the GPU (tokenise, sort by length, pad, run; no server; sentiment):",
        "",
        row("configuration", "texts/s"),
        row("---", "---"),
        *(row(label, f"{rate:,.0f}") for label, rate in raw.items()),
        "",
        "`inferline serve` with `INFERLINE_DEVICE=cuda`, loaded by `inferline bench` clients "
        "(4 processes at once on the closed-loop workloads, 1 on `latency`):",
        "",
        row("batcher", "workload", "texts/s", "of raw", "p50 ms", "p99 ms", "non-2xx"),
        row(*["---"] * 7),
    ]
    for label, served in run["service"].items():
        for key, name in WORKLOADS:
            r = served[key]
            offered = f" at {r['offered_per_s']:,.0f}/s" if key == "latency" else ""
            lines.append(
                row(
                    label,
                    name + offered,
                    f"{r['texts_per_s']:,.0f}",
                    f"{r['texts_per_s'] / best:.3f}",
                    f"{r['p50_ms']:.1f}",
                    f"{r['p99_ms']:.1f}",
                    str(r["non_2xx"] + r["errors"]),
                )
            )
    first = next(iter(run["service"].values()))
    peak = max(
        max(v["single"]["texts_per_s"], v["multi"]["texts_per_s"]) for v in run["service"].values()
    )
    singles = [v["single"]["texts_per_s"] for v in run["service"].values()]
    util = " and ".join(
        f"{100 * float(g.rsplit(' ', 1)[1]):.0f}%"
        for v in run["service"].values()
        for g in v["gpu_gauges"]
        if g.startswith("inferline_gpu_utilization_ratio")
    )
    lines += [
        "",
        "Cold start (process start to ready, CUDA initialised and warmed up): "
        + ", ".join(f"{s['cold_start_s']:.1f} s" for s in run["service"].values())
        + ". `/metrics` carried the GPU gauges (`inferline_gpu_memory_used_bytes` "
        f"{_gib(first['gpu_gauges'], 'inferline_gpu_memory_used_bytes'):.1f} GiB of "
        f"{_gib(first['gpu_gauges'], 'inferline_gpu_memory_total_bytes'):.0f} GiB, the whole "
        "device's, this benchmark's own sessions included; `inferline_gpu_utilization_ratio`), "
        "and nvidia-smi listed the server process with "
        f"{first['compute_apps'].splitlines()[-1].split(',')[1].strip()}.",
        "",
        f"**What limits it.** Not the GPU: served throughput reached {peak / best:.0%} of the "
        f"raw limit at best, and the utilisation gauge read {util} (one reading a batcher "
        "row, at the end of its runs). One inferline process runs one event loop that "
        "parses, tokenises, batches and answers every request, so at "
        f"{min(singles):,.0f} to {max(singles):,.0f} requests/s on `single` the process, "
        "not the model, is the limit (not profiled there: the GPU machine is lent for "
        "minutes; on the 2-core CPU machine the model saturates first). The larger batches "
        "did not raise throughput. To use a large GPU fully, run several replicas on it "
        "(time-slicing or MPS, docs/deployment.md) and send bulk work as `multi`-sized "
        "requests or through the queue.",
        *_replicas(run, best),
        END,
        "",
    ]
    return "\n".join(lines)


def _replicas(run: dict[str, Any], best: float) -> list[str]:
    """Several servers on the one GPU (runs from before bench.gpu measured it have none)."""
    rep = run.get("replicas")
    if rep is None:
        return []
    lines = [
        "",
        f"{rep['replicas']} `inferline serve` processes on the one GPU at once, each loaded "
        "by its own `inferline bench` clients (on `single`, 16 connections a client process; "
        "on `multi`, 2 processes of 2 connections):",
        "",
        row("workload", "texts/s, all", "per process", "of raw", "p50 ms", "p99 ms", "non-2xx"),
        row(*["---"] * 7),
    ]
    for key in ("single", "multi"):
        r = rep[key]
        lines.append(
            row(
                f"`{key}` ({r['clients']} client processes)",
                f"{r['texts_per_s']:,.0f}",
                ", ".join(f"{x:,}" for x in r["per_replica"]),
                f"{r['texts_per_s'] / best:.3f}",
                f"{r['p50_ms']:.1f}",
                f"{r['p99_ms']:.1f}",
                str(r["non_2xx"] + r["errors"]),
            )
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--commit", required=True, help="the commit that was measured")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    args = parser.parse_args()
    run = json.loads(args.run.read_text())
    source = (
        args.run.resolve().relative_to(ROOT)
        if args.run.resolve().is_relative_to(ROOT)
        else args.run
    )
    block = section(run, str(source), args.commit)
    print(block)
    args.out.write_text(splice(args.out.read_text(), block, START, END))


if __name__ == "__main__":
    main()
