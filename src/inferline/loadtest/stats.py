"""Latency statistics: nearest-rank percentiles, a run's summary, CDF points for plots."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank ``q``-th percentile (0 < q <= 100) of ``values``; NaN when empty.

    Nearest rank returns an observed value: the smallest one with at least q% of the values
    at or below it, so p100 is the maximum and a p99 of 100 values is the 99th smallest.
    """
    if not 0 < q <= 100:
        raise ValueError(f"percentile {q} is not in (0, 100]")
    if not values:
        return math.nan
    ordered = values if _is_sorted(values) else sorted(values)
    rank = math.ceil(q / 100 * len(ordered))
    return float(ordered[max(rank, 1) - 1])


def _is_sorted(values: Sequence[float]) -> bool:
    return all(values[i] <= values[i + 1] for i in range(len(values) - 1))


@dataclass(frozen=True)
class Summary:
    """One workload's outcome. Latencies are of successful (2xx) responses."""

    workload: str
    requests: int  # responses received, any status
    ok: int  # 2xx responses
    texts: int  # texts in 2xx responses
    errors: int  # requests with no HTTP response
    elapsed_s: float
    texts_per_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float
    statuses: dict[int, int] = field(default_factory=dict)
    offered_per_s: float | None = None  # open loop: the target rate in requests/s


def summarize(
    workload: str,
    latencies_s: Sequence[float],
    *,
    texts_per_request: int,
    elapsed_s: float,
    statuses: Mapping[int, int],
    errors: int = 0,
    offered_per_s: float | None = None,
) -> Summary:
    ms = sorted(1e3 * x for x in latencies_s)
    ok = sum(n for status, n in statuses.items() if 200 <= status < 300)
    return Summary(
        workload=workload,
        requests=sum(statuses.values()),
        ok=ok,
        texts=ok * texts_per_request,
        errors=errors,
        elapsed_s=elapsed_s,
        texts_per_s=ok * texts_per_request / elapsed_s if elapsed_s > 0 else 0.0,
        p50_ms=percentile(ms, 50),
        p90_ms=percentile(ms, 90),
        p99_ms=percentile(ms, 99),
        mean_ms=sum(ms) / len(ms) if ms else math.nan,
        max_ms=ms[-1] if ms else math.nan,
        statuses=dict(statuses),
        offered_per_s=offered_per_s,
    )


def cdf(latencies: Sequence[float], points: int = 500) -> tuple[list[float], list[float]]:
    """(x, y) of the empirical CDF, thinned to about ``points`` points (the maximum kept)."""
    ordered = sorted(latencies)
    n = len(ordered)
    if n == 0:
        return [], []
    step = max(1, n // points)
    index = list(range(step - 1, n, step))
    if index[-1] != n - 1:
        index.append(n - 1)
    return [float(ordered[i]) for i in index], [(i + 1) / n for i in index]
