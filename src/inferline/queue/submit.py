"""``inferline submit``: enqueue a JSONL or CSV file, one job per line, and optionally wait
and write the results in input order.

Job ids are derived from the file's content, the model and the line number, so running the
same command again resumes: known jobs are not enqueued twice."""

from __future__ import annotations

import asyncio
import csv
import errno
import hashlib
import io
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import orjson

from inferline import textfile
from inferline.config import Settings
from inferline.errors import InvalidInput
from inferline.queue.producer import CONFLICT, DONE, FAILED, NEW, PENDING, REFUSED, Producer

SUBMIT_CHUNK = 500
POLL_S = 0.25
FULL_WAIT_S = 5.0  # the Retry-After of a full stream


def read_texts(path: Path) -> list[str]:
    """The texts of a JSONL file (a string, or an object with ``text``, per line) or a CSV
    file with a ``text`` column, all checked before any is sent: a bad line stops the run
    with its line number. A UTF-8 byte order mark (Excel writes one) is skipped."""
    data = textfile.read(path)
    if path.suffix.lower() == ".csv":
        return _csv_texts(path, data)
    return [
        _checked(textfile.jsonl_text(path, n, line), path, n) for n, line in textfile.lines(data)
    ]


def _csv_texts(path: Path, data: str) -> list[str]:
    reader = csv.DictReader(io.StringIO(data, newline=""))
    if reader.fieldnames is not None and "text" not in reader.fieldnames:
        raise InvalidInput(f"{path}: the CSV file has no 'text' column")
    return [_checked(row["text"], path, reader.line_num) for row in reader]


def _checked(text: str | None, path: Path, line: int) -> str:
    if text is None or not text.strip():
        raise InvalidInput(f"{path}:{line}: the text is empty")
    return text


def job_ids(path: Path, model: str, count: int) -> list[str]:
    digest = hashlib.sha256(path.read_bytes() + model.encode()).hexdigest()[:20]
    return [f"submit:{digest}:{i}" for i in range(count)]


@dataclass
class Progress:
    total: int
    out: TextIO
    started: float = 0.0

    def __post_init__(self) -> None:
        self.started = time.monotonic()

    def show(self, done: int, failed: int, final: bool = False) -> None:
        finished = done + failed
        elapsed = max(time.monotonic() - self.started, 1e-6)
        rate = finished / elapsed
        eta = (self.total - finished) / rate if rate > 0 else float("inf")
        width = 30
        filled = width * finished // max(self.total, 1)
        bar = "#" * filled + "-" * (width - filled)
        eta_text = f"{eta:.0f}s" if eta != float("inf") else "?"
        self.out.write(
            f"\r[{bar}] done {done} failed {failed} pending {self.total - finished}"
            f" | {rate:.0f}/s | ETA {eta_text}"
        )
        if final:
            self.out.write("\n")
        self.out.flush()


def submit_file(
    settings: Settings,
    path: Path,
    model: str,
    *,
    wait: bool = False,
    output: Path | None = None,
    progress: TextIO | None = sys.stderr,
) -> int:
    """Enqueue every line of ``path``; with ``wait``, write the outcomes in input order (to
    ``output`` or stdout). Returns the number of failed jobs."""
    if output is not None:
        if not wait:
            raise InvalidInput("--output needs --wait: the results are written when all are in")
        _check_writable(output)
    texts = read_texts(path)
    ids = job_ids(path, model, len(texts))
    outcomes = asyncio.run(_submit(settings, model, texts, ids, wait=wait, progress=progress))
    if outcomes is None:
        return 0
    failed = sum(1 for o in outcomes if o["status"] == FAILED)
    lines = b"".join(orjson.dumps(o) + b"\n" for o in outcomes)
    if output is None:
        sys.stdout.buffer.write(lines)
    else:
        output.write_bytes(lines)
    return failed


def _check_writable(path: Path) -> None:
    """Say now, before any job is sent, that ``path`` cannot be written (a missing folder,
    no permission), and leave no empty file behind when the run fails later."""
    folder = path.parent
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
    if not folder.is_dir():
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(folder))
    if not os.access(path if path.exists() else folder, os.W_OK):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))


async def _submit(
    settings: Settings,
    model: str,
    texts: list[str],
    ids: list[str],
    *,
    wait: bool,
    progress: TextIO | None,
) -> list[dict[str, Any]] | None:
    producer = Producer.from_settings(settings)
    try:
        new = 0
        for start in range(0, len(texts), SUBMIT_CHUNK):
            end = start + SUBMIT_CHUNK
            chunk: list[tuple[str, list[str], str | None]] = [
                (model, [text], job_id)
                for text, job_id in zip(texts[start:end], ids[start:end], strict=True)
            ]
            new += await _enqueue(producer, chunk, progress)
        if progress is not None:
            progress.write(f"{len(texts)} job(s), {new} new, {len(texts) - new} already known\n")
        return await _wait(producer, ids, progress) if wait else None
    finally:
        await producer.close()


async def _enqueue(
    producer: Producer, chunk: list[tuple[str, list[str], str | None]], progress: TextIO | None
) -> int:
    """Enqueue ``chunk``; while the stream is full, wait for the workers to make room and
    enqueue what was refused. Returns how many jobs were new."""
    new = 0
    while True:
        replies = await producer.submit_each(chunk)
        clashes = [job_id for job_id, reply in replies if reply == CONFLICT]
        if clashes:  # ids come from the file's content and the model: not from this file
            raise InvalidInput(f"job {clashes[0]!r} is in the queue with other inputs")
        new += sum(1 for _, reply in replies if reply == NEW)
        refused = {job_id for job_id, reply in replies if reply == REFUSED}
        if not refused:
            return new
        chunk = [job for job in chunk if job[2] in refused]
        if progress is not None:
            progress.write(
                f"the job queue is full ({producer.max_len} jobs); {len(refused)} job(s) wait"
                f" for room, retrying in {FULL_WAIT_S:.0f}s (Ctrl-C, then run again, resumes)\n"
            )
        await asyncio.sleep(FULL_WAIT_S)


async def _wait(
    producer: Producer, ids: list[str], progress: TextIO | None
) -> list[dict[str, Any]]:
    outcomes: dict[str, dict[str, Any]] = {}
    bar = Progress(len(ids), progress) if progress is not None else None
    while True:
        waiting = [job_id for job_id in ids if job_id not in outcomes]
        for start in range(0, len(waiting), SUBMIT_CHUNK):
            part = waiting[start : start + SUBMIT_CHUNK]
            for job_id, outcome in zip(part, await producer.statuses(part), strict=True):
                if outcome is None:  # expired or lost: the caller can run the command again
                    outcomes[job_id] = {"id": job_id, "status": FAILED, "error": "unknown job"}
                elif outcome["status"] != PENDING:
                    outcomes[job_id] = outcome
        done = sum(1 for o in outcomes.values() if o["status"] == DONE)
        if bar is not None:
            bar.show(done, len(outcomes) - done, final=len(outcomes) == len(ids))
        if len(outcomes) == len(ids):
            return [outcomes[job_id] for job_id in ids]
        await asyncio.sleep(POLL_S)
