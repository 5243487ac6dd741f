"""The plots of docs/benchmarks.md: throughput by system, and latency CDFs.

matplotlib is imported here only, and only when a plot is asked for (the ``bench`` extra).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from inferline.loadtest.stats import cdf


def need_matplotlib() -> None:
    """ValueError (a one-line CLI error) when matplotlib is not installed."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ValueError(
            "--plot-dir needs matplotlib: pip install 'inferline[bench]' (or matplotlib)"
        ) from None


def _pyplot() -> Any:
    need_matplotlib()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def throughput(
    path: Path,
    bars: Mapping[str, Mapping[str, float]],
    *,
    title: str = "Throughput (texts/s)",
    reference: Mapping[str, float] | None = None,
) -> Path:
    """Grouped bars: ``bars[system][workload] = texts/s``; ``reference[workload]`` (say the raw
    limit) is drawn as a dashed line across its group."""
    plt = _pyplot()
    systems = list(bars)
    workloads = sorted({w for values in bars.values() for w in values}, key=_order)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.0 + 1.1 * len(systems)), 4.5))
    width = 0.8 / max(len(workloads), 1)
    for j, workload in enumerate(workloads):
        xs = [i + (j - (len(workloads) - 1) / 2) * width for i in range(len(systems))]
        values = [bars[s].get(workload, 0.0) for s in systems]
        drawn = ax.bar(xs, values, width, label=workload)
        ax.bar_label(drawn, labels=[f"{v:.0f}" if v else "" for v in values], fontsize=7)
        if reference and workload in reference:
            ax.axhline(reference[workload], linestyle="--", linewidth=1, color=f"C{j}")
    if reference:
        ax.plot([], [], linestyle="--", color="grey", label="raw engine limit")
    ax.set_xticks(range(len(systems)), systems, rotation=15)
    ax.set_ylabel("texts/s")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def latency_cdf(
    path: Path,
    series: Mapping[str, Sequence[float]],
    *,
    title: str = "Latency CDF",
    styles: Mapping[str, str] | None = None,
) -> Path:
    """One CDF line per label of ``series`` (latencies in ms), on a log x axis."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for label, values in series.items():
        xs, ys = cdf(values)
        if xs:
            ax.plot(xs, ys, (styles or {}).get(label, "-"), label=label, linewidth=1.4)
    ax.set_xscale("log")
    ax.set_xlabel("latency (ms, log scale)")
    ax.set_ylabel("fraction of requests")
    ax.set_ylim(0, 1.01)
    plain = plt.FuncFormatter(lambda v, _: f"{v:g}")
    ax.xaxis.set_major_formatter(plain)
    # Minor ticks: label only 2 and 5 of each decade, so a wide range stays readable.
    ax.xaxis.set_minor_formatter(
        plt.FuncFormatter(lambda v, _: f"{v:g}" if f"{v:g}"[0] in "25" else "")
    )
    for q in (0.5, 0.9, 0.99):
        ax.axhline(q, color="grey", linewidth=0.5, alpha=0.5)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _order(workload: str) -> tuple[int, str]:
    known = ["single", "multi", "latency"]
    return (known.index(workload) if workload in known else len(known), workload)
