"""Helpers shared by the benchmark runners (bench.run, bench.compare, bench.overload, ...):
wrk with the Lua body cycler, the raw-engine limit in its own process, memory of a process
tree, the machine's description, and Markdown table rows."""

from __future__ import annotations

import json
import os
import platform
import re
import resource
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LUA = ROOT / "bench" / "wrk" / "bodies.lua"
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "sentiment" / "amazon_reviews.jsonl"
# bench.compare owns the text between these markers in docs/benchmarks.md.
START, END = "<!-- compare:start -->", "<!-- compare:end -->"
_SECTION = re.compile(r"<!-- ([\w-]+):start -->.*?<!-- \1:end -->", re.S)


@dataclass
class WrkResult:
    texts_per_s: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    cpu_s: float
    p90_ms: float = float("nan")
    errors: int = 0  # socket errors: connect, read, write, timeout


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[unit]


def run_child(command: list[str]) -> tuple[str, float]:
    """Run a load generator to completion; return its output and the CPU seconds it used."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(command, capture_output=True, text=True, check=True, cwd=ROOT).stdout
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return out, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def wrk(
    url: str,
    bodies: Path,
    connections: int,
    duration: float,
    texts_per_request: int = 1,
    *,
    headers: Sequence[str] = (),
) -> WrkResult:
    """wrk, one thread, cycling through the JSON bodies in ``bodies`` (one a line);
    ``headers`` are extra ``Name: value`` lines for every request."""
    command = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s", "--latency"]
    for header in headers:
        command += ["-H", header]
    out, cpu = run_child([*command, "-s", str(LUA), url, "--", str(bodies)])
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    rps *= texts_per_request
    p50 = _ms(re.search(r"\s50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p90 = _ms(re.search(r"\s90%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"\s99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    )
    errors = sum(int(x) for x in socket_errors.groups()) if socket_errors else 0
    return WrkResult(rps, p50, p99, int(bad.group(1)) if bad else 0, cpu, p90, errors)


def raw_limit(model: Path, texts: Path, config: str | None = None) -> tuple[float, str]:
    """The raw-engine limit (bench.raw in its own process): texts/s and the best config;
    with ``config``, that configuration's texts/s alone."""
    out = subprocess.run(
        [sys.executable, "-m", "bench.raw", str(model), str(texts), *([config] if config else [])],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout
    data = json.loads(out)
    return float(data["texts_per_s"]), str(data["best"])


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def tree_memory_mb(pid: int) -> tuple[float, float]:
    """(RSS, PSS) in MB summed over ``pid`` and its descendants. PSS shares each shared page
    among the processes that map it, so forked workers are not counted twice."""
    rss = pss = 0.0
    for p in descendants(pid):
        try:
            rss += rss_mb(p)
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    pss += int(line.split()[1]) / 1024
        except (OSError, ValueError):
            continue
    return rss, pss


def machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    ).stdout.strip()
    return f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, commit {commit}"


def row(*cells: str) -> str:
    return "| " + " | ".join(cells) + " |"


def splice(document: str, block: str, start: str = START, end: str = END) -> str:
    """Replace the text between the markers (inclusive) with ``block``, or append it."""
    if start in document and end in document:
        head, rest = document.split(start, 1)
        return head + block.rstrip("\n") + rest.split(end, 1)[1]
    return document.rstrip("\n") + "\n\n" + block


def keep_marked(document: str, previous: str) -> str:
    """``document`` with every marked section of ``previous`` (``<!-- NAME:start -->`` to
    ``<!-- NAME:end -->``, written by bench.compare, bench.telemetry, bench.gpu_report)
    spliced in, so that a runner that rewrites the file keeps the others' sections."""
    for match in _SECTION.finditer(previous):
        name = match.group(1)
        start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
        document = splice(document, match.group(0), start, end)
    return document
