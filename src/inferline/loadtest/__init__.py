"""``inferline bench``: a load generator for any inferline URL.

Workloads (../shared/BENCH.md): ``single`` (1 text a request, 64 connections), ``multi`` (16
texts a request, 8 connections), both closed loop, and ``latency``, open loop at a fixed
rate, with latency counted from each request's scheduled send time so that a slow server
cannot hide its queue. It prints throughput and p50/p90/p99, shows live progress on stderr
and can write the plots of docs/benchmarks.md (matplotlib, imported only then).

Only the standard library (asyncio streams) is used for HTTP: the client must cost little
CPU, since on a small machine it shares the cores with the server.
"""

from inferline.loadtest.stats import Summary, cdf, percentile, summarize

__all__ = ["Summary", "cdf", "percentile", "summarize"]
