"""The report of a comparison: medians, the table, the targets, the docs section, the plots."""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

from bench.common import END, START, machine, row
from bench.measure import Comparison
from bench.systems import PEER_NAMES

METRICS = ("texts_per_s", "ratio", "p50_ms", "p90_ms", "p99_ms", "errors", "loadgen_cpu")


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
            values = {m: median_of(rounds, workload, m) for m in METRICS}
            failed = [r[workload]["failed"] for r in rounds if "failed" in r.get(workload, {})]
            if failed:
                values["failed"] = failed[0]
            rate = median_of(rounds, workload, "rate")
            if rate is not None:
                values["rate"] = rate
            entry[workload] = values
        systems[name] = entry
    peers = [n for n in systems if n != "inferline"]
    best: dict[str, float] = {}  # the best peer's ratio to the raw limit
    for workload in ("single", "multi"):
        ratios = [raw_ratio(systems[p][workload], raw) for p in peers]
        if ratios and max(ratios) > 0:
            best[workload] = max(ratios)
    p99s = [systems[p]["latency_100"]["p99_ms"] for p in peers]
    finite = [x for x in p99s if x is not None]
    return {
        "raw": raw,
        "raw_config": statistics.mode(cmp.raw_config),
        "best_peer": best,
        "best_peer_p99_100": min(finite) if finite else None,
        "systems": systems,
    }


def raw_ratio(m: dict[str, Any], raw: float) -> float:
    """The median of the rounds' ratios to the raw runs around them, where measured; else
    the median texts/s over the median raw run."""
    if m.get("ratio") is not None:
        return float(m["ratio"])
    return float(m["texts_per_s"] or 0.0) / raw


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
                    ratio_best = f"{raw_ratio(m, raw) / best[workload]:.2f}"
                elif workload == "latency_100" and s["best_peer_p99_100"] and m["p99_ms"]:
                    ratio_best = f"p99 {m['p99_ms'] / s['best_peer_p99_100']:.2f}x"
                cells = [
                    label,
                    _f(tps),
                    "" if workload.startswith("latency") or not tps else f"{raw_ratio(m, raw):.2f}",
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

    def share(name: str, workload: str) -> float:
        """Its ratio to the raw runs around it: systems ran minutes apart on a host whose
        speed drifts, so they are compared through the raw engine, not by texts/s."""
        return raw_ratio(sys_[name][workload], raw)

    single, multi = share("inferline", "single"), share("inferline", "multi")
    checks: list[tuple[str, str, bool]] = [
        ("`single` ≥ 0.85x raw limit", f"{single:.2f}x", single >= 0.85),
        ("`multi` ≥ 0.90x raw limit", f"{multi:.2f}x", multi >= 0.90),
    ]
    if "seed" in sys_:
        ratio = single / max(share("seed", "single"), 1e-9)
        checks.append(("`single` ≥ 1.6x the seed design", f"{ratio:.2f}x", ratio >= 1.6))
    if batching:
        ratio = single / max(1e-9, *(share(n, "single") for n in batching))
        checks.append(("`single` ≥ 3x the best batching peer", f"{ratio:.2f}x", ratio >= 3))
    if "multi" in s["best_peer"]:  # the best of every other system
        ratio = multi / s["best_peer"]["multi"]
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
        f"{len(cmp.raw)} runs ({s['raw_config']}: the first run's search found it, and the",
        "later runs ran it alone). The raw engine runs at the start of each round and right",
        "after each system's `single` and `multi`; a system's ratio to the raw limit is the",
        "median over rounds of its texts/s over the mean of the raw runs before and after it.",
        "Systems are compared with each other (the ratio to the best peer, and the targets)",
        "through these ratios, not their texts/s, since they ran minutes apart.",
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
        "bench/systems.py): the seed design is FastAPI with a synchronous endpoint and 1 ONNX",
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
