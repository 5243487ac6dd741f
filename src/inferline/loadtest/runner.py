"""Run workloads against an inferline URL and report them (the ``inferline bench`` command)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import ssl
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TextIO

from inferline import textfile
from inferline.keypair import load_cert_chain
from inferline.loadtest.client import Record, Target, closed_loop, open_loop
from inferline.loadtest.progress import live
from inferline.loadtest.stats import Summary, summarize


@dataclass(frozen=True)
class Workload:
    name: str
    texts_per_request: int
    connections: int


WORKLOADS = {
    "single": Workload("single", 1, 64),
    "multi": Workload("multi", 16, 8),
    "latency": Workload("latency", 1, 256),  # open loop: at most this many connections
}

# Used when no --data file is given: short product reviews, positive, negative and neutral.
SAMPLE_TEXTS = [
    "The battery lasts all day and the screen is gorgeous.",
    "Broke after a week. Customer service never answered.",
    "It comes in a box.",
    "Great value for the price, I would buy it again.",
    "The strap feels cheap and the clasp came loose on day two.",
    "Does what it says. Nothing more, nothing less.",
    "Setup took five minutes and the app is easy to use, even for my parents.",
    "Terrible sound quality; returned it.",
    "Arrived on Tuesday in its original packaging.",
    "I love how light it is, and the keyboard is a joy to type on.",
    "The instructions were missing and two screws did not fit the holes at all.",
    "Colour is slightly darker than in the photos.",
    "Best purchase I've made this year: quiet, fast and well built.",
    "Stopped charging after the first month and the seller refused a refund.",
    "The cable is 1.5 m long.",
    "Works well with my old laptop, though the fan is a little loud under load.",
]


def load_texts(path: Path | None) -> list[str]:
    """Texts from a JSONL file (objects with ``text``, or strings) or a text file (a line
    each); the built-in sample when ``path`` is None."""
    if path is None:
        return list(SAMPLE_TEXTS)
    data = textfile.read(path)
    jsonl = path.suffix == ".jsonl"
    texts = [
        textfile.jsonl_text(path, n, line) if jsonl else line for n, line in textfile.lines(data)
    ]
    if not texts:
        raise ValueError(f"no texts in {path}")
    return texts


def bodies(texts: Sequence[str], texts_per_request: int) -> list[bytes]:
    """JSON request bodies for ``/predict``, cycling through ``texts``."""
    if texts_per_request == 1:
        return [json.dumps({"text": t}).encode() for t in texts]
    n = texts_per_request
    count = max(1, len(texts) // n)
    return [
        json.dumps({"texts": [texts[(i * n + k) % len(texts)] for k in range(n)]}).encode()
        for i in range(count)
    ]


@dataclass
class Outcome:
    summary: Summary
    latencies_ms: list[float]
    first_error: str = ""  # what the first request without an answer met


async def run_workload(
    url: str,
    workload: str,
    texts: Sequence[str],
    *,
    duration: float,
    connections: int | None = None,
    rate: float | None = None,
    progress: TextIO | None = None,
    tls: ssl.SSLContext | None = None,
    headers: Sequence[str] = (),
) -> Outcome:
    """One workload; ``latency`` needs ``rate`` (requests/s, one text each). ``tls`` and
    ``headers`` are as for :meth:`Target.parse`."""
    spec = WORKLOADS[workload]
    target = Target.parse(url, tls=tls, headers=headers)
    payloads = bodies(texts, spec.texts_per_request)
    record = Record()
    label = workload if rate is None else f"{workload} @{rate:.0f}/s"
    shown: contextlib.AbstractAsyncContextManager[None] = contextlib.nullcontext()
    if progress is not None:  # None: --quiet
        shown = live(
            label,
            record,
            duration=duration,
            texts_per_request=spec.texts_per_request,
            stream=progress,
        )
    async with shown:
        if workload == "latency":
            if rate is None or rate <= 0:
                raise ValueError("the latency workload needs a rate above 0")
            await open_loop(
                target,
                payloads,
                rate=rate,
                duration=duration,
                record=record,
                max_connections=connections or spec.connections,
            )
        else:
            await closed_loop(
                target,
                payloads,
                connections=connections or spec.connections,
                duration=duration,
                record=record,
            )
    summary = summarize(
        workload,
        record.latencies,
        texts_per_request=spec.texts_per_request,
        elapsed_s=record.elapsed,
        statuses=record.statuses,
        errors=record.errors,
        offered_per_s=rate,
    )
    return Outcome(summary, [1e3 * x for x in record.latencies], record.first_error)


async def run(
    url: str,
    workloads: Sequence[str],
    texts: Sequence[str],
    *,
    duration: float,
    connections: int | None = None,
    rate: float | None = None,
    progress: TextIO | None = None,
    tls: ssl.SSLContext | None = None,
    headers: Sequence[str] = (),
) -> list[Outcome]:
    """The workloads in order. ``latency`` without a rate runs at 50% of the ``single``
    throughput measured in this call (measuring it first when ``single`` is not asked for)."""
    outcomes: list[Outcome] = []
    single: Summary | None = None
    common: dict[str, Any] = {
        "duration": duration,
        "connections": connections,
        "progress": progress,
        "tls": tls,
        "headers": headers,
    }
    for name in workloads:
        if name == "latency" and rate is None:
            if single is None:
                first = await run_workload(url, "single", texts, **common)
                outcomes.append(first)
                single = first.summary
            if single.texts_per_s <= 0:
                hint = diagnose(outcomes, headers)
                why = f": {hint}" if hint else ""
                raise ValueError(f"no successful response on `single`{why}; cannot pick a rate")
            half = 0.5 * single.texts_per_s
            outcomes.append(await run_workload(url, name, texts, rate=half, **common))
            continue
        outcome = await run_workload(
            url,
            name,
            texts,
            rate=rate if name == "latency" else None,
            **common,
        )
        if name == "single":
            single = outcome.summary
        outcomes.append(outcome)
    return outcomes


def diagnose(outcomes: Sequence[Outcome], headers: Sequence[str]) -> str | None:
    """Why requests failed, for the user: a 401, requests without an answer, or a run
    with no success at all; None when there is nothing to say."""
    if any(401 in o.summary.statuses for o in outcomes):
        given = "was refused" if headers else "is needed"
        return f"the service answered 401: an API key {given} (--api-key, or INFERLINE_API_KEY)"
    for o in outcomes:
        if o.first_error:
            return (
                f"{o.summary.errors} request(s) of `{o.summary.workload}` got no answer; "
                f"the first: {o.first_error}"
            )
    for o in outcomes:
        if o.summary.ok == 0 and o.summary.statuses:
            seen = ", ".join(f"{n} x {status}" for status, n in sorted(o.summary.statuses.items()))
            return f"no request of `{o.summary.workload}` succeeded; the service answered {seen}"
    return None


def table(outcomes: Sequence[Outcome]) -> str:
    lines = [
        f"{'workload':<10} {'offered/s':>9} {'texts/s':>9} {'p50 ms':>8} {'p90 ms':>8} "
        f"{'p99 ms':>8} {'ok':>8} {'non-2xx':>8} {'errors':>7}"
    ]
    for o in outcomes:
        s = o.summary
        offered = f"{s.offered_per_s:.0f}" if s.offered_per_s else "max"
        lines.append(
            f"{s.workload:<10} {offered:>9} {s.texts_per_s:9.1f} {s.p50_ms:8.1f} "
            f"{s.p90_ms:8.1f} {s.p99_ms:8.1f} {s.ok:8d} {s.requests - s.ok:8d} {s.errors:7d}"
        )
    return "\n".join(lines)


def plot(outcomes: Sequence[Outcome], directory: Path, name: str = "inferline") -> list[Path]:
    from inferline.loadtest import plots

    bars = {name: {o.summary.workload: o.summary.texts_per_s for o in outcomes}}
    written = [plots.throughput(directory / "throughput.png", bars)]
    series = {
        f"{o.summary.workload} ({o.summary.offered_per_s or 0:.0f}/s offered)"
        if o.summary.offered_per_s
        else f"{o.summary.workload} (closed loop)": o.latencies_ms
        for o in outcomes
    }
    written.append(plots.latency_cdf(directory / "latency_cdf.png", series))
    return written


def tls_context(
    cafile: Path | None, certfile: Path | None, keyfile: Path | None
) -> ssl.SSLContext | None:
    """The client's TLS settings; None when none is given (an https:// URL then trusts the
    system's CAs)."""
    if cafile is None and certfile is None and keyfile is None:
        return None
    if (certfile is None) != (keyfile is None):
        raise ValueError("--cert and --key go together")
    try:
        context = ssl.create_default_context(cafile=cafile)
    except ssl.SSLError as exc:
        raise ValueError(f"cannot use --cacert {cafile}: {exc}") from None
    except OSError as exc:  # which names no file
        raise ValueError(f"cannot use --cacert {cafile}: {exc.strerror or exc}") from None
    if certfile is not None and keyfile is not None:
        load_cert_chain(context, certfile, keyfile, ("--cert", "--key"))
    return context


def auth_headers(api_key: str | None) -> list[str]:
    """The ``Authorization`` line for ``api_key`` (from --api-key or INFERLINE_API_KEY)."""
    key = api_key if api_key is not None else os.environ.get("INFERLINE_API_KEY", "")
    return [f"Authorization: Bearer {key}"] if key else []


def _finite(value: Any) -> Any:
    """NaN (a percentile of no answers) as null: strict JSON has no NaN."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def main(args: Any, out: TextIO | None = None) -> int:
    """Entry point of ``inferline bench`` (``args`` from the CLI's parser); prints to
    ``out``, or to whatever ``sys.stdout`` is at the time."""
    out = out or sys.stdout
    if args.plot_dir is not None:
        from inferline.loadtest import plots

        plots.need_matplotlib()  # before the run, not after it
    workloads = ["single", "multi", "latency"] if args.workload == "all" else [args.workload]
    texts = load_texts(args.data)
    headers = auth_headers(args.api_key)
    outcomes = asyncio.run(
        run(
            args.url,
            workloads,
            texts,
            duration=args.duration,
            connections=args.connections,
            rate=args.rate,
            progress=None if args.quiet else sys.stderr,
            tls=tls_context(args.cacert, args.cert, args.key),
            headers=headers,
        )
    )
    if args.json:
        summaries = [_finite(asdict(o.summary)) for o in outcomes]
        out.write(json.dumps(summaries, indent=2, allow_nan=False) + "\n")
    else:
        out.write(table(outcomes) + "\n")
    if args.plot_dir is not None:
        for path in plot(outcomes, args.plot_dir):
            print(f"wrote {path}", file=sys.stderr)
    hint = diagnose(outcomes, headers)
    if hint:
        print(f"inferline: {hint}", file=sys.stderr)
    failed = any(o.summary.ok == 0 for o in outcomes)
    return 1 if failed else 0
