"""StreamMeter: watches a relayed OpenAI answer pass by, without changing a byte of it, and
records time to first token, output tokens per second and token counts.

In a stream, each server-sent event with text in ``choices[].delta.content`` (chat) or
``choices[].text`` (completions) counts as one token, which is what OpenAI, vLLM and
Ollama send; a ``usage`` object (``stream_options.include_usage``) replaces the count with
the upstream's own. A non-streamed answer gives its ``usage`` only.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import orjson

from inferline.telemetry.metrics import Metrics

ENGINE = "openai"  # the engine label of the metrics
MAX_EVENT = 1 << 20
"""Bytes of one event that are read (metered) or held back (relayed whole); a larger event
is relayed as it comes and not metered, so a huge one costs no more than its copy."""


class StreamMeter:
    def __init__(self, model: str, started: float, metrics: Metrics, *, stream: bool) -> None:
        self.model = model
        self.started = started
        self.metrics = metrics
        self.stream = stream
        self.first: float | None = None
        self.chunks = 0  # events that carried text
        self.usage: dict[str, Any] | None = None
        self._buffer = bytearray()
        self._done = False
        self._skipping = False  # inside an event over MAX_EVENT: wait for its end

    def feed(self, chunk: bytes) -> None:
        buffer = self._buffer
        start = max(0, len(buffer) - 3)  # what came before holds no boundary
        buffer += chunk
        if not self.stream:
            return
        pos = 0
        for begin, cut in _events(buffer, start):
            if not self._skipping:
                self._event(bytes(buffer[begin:cut]))
            self._skipping = False
            pos = cut
        del buffer[:pos]
        if len(buffer) > MAX_EVENT:
            self._skipping = True
            del buffer[:-3]  # enough to see the separator that ends it

    def _event(self, event: bytes) -> None:
        data = b"\n".join(
            line[5:].strip() for line in event.splitlines() if line.startswith(b"data:")
        )
        if not data or data == b"[DONE]":
            return
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            return  # not ours to judge: the client gets it as it came
        if not isinstance(obj, dict):
            return
        if isinstance(obj.get("usage"), dict):
            self.usage = obj["usage"]
        for choice in obj.get("choices") or ():
            if not isinstance(choice, dict):
                continue
            delta = choice.get("delta")
            text = delta.get("content") if isinstance(delta, dict) else choice.get("text")
            if text:
                self.chunks += 1
                if self.first is None:
                    self.first = time.monotonic()
                    self.metrics.ttft.labels(ENGINE).observe(self.first - self.started)

    def finish(self) -> None:
        """The answer is complete: record its tokens (once)."""
        if self._done:
            return
        self._done = True
        if self.stream:
            if self._buffer.strip() and not self._skipping:
                self._event(bytes(self._buffer))
        else:
            try:
                answer = orjson.loads(self._buffer)
            except orjson.JSONDecodeError:
                return
            if isinstance(answer, dict) and isinstance(answer.get("usage"), dict):
                self.usage = answer["usage"]
        usage = self.usage or {}
        output = _count(usage.get("completion_tokens"), self.chunks)
        prompt = _count(usage.get("prompt_tokens"), 0)
        if output:
            self.metrics.tokens.labels(self.model, "output").inc(output)
        if prompt:
            self.metrics.tokens.labels(self.model, "input").inc(prompt)
        if self.first is not None and output > 1:
            elapsed = time.monotonic() - self.first
            if elapsed > 0:
                self.metrics.output_tps.labels(ENGINE).observe((output - 1) / elapsed)


def _count(value: Any, default: int) -> int:
    valid = isinstance(value, int) and not isinstance(value, bool) and value >= 0
    return int(value) if valid else default


def _events(buffer: bytearray, start: int) -> Iterator[tuple[int, int]]:
    """(begin, end) of each whole event in ``buffer``: ``begin`` where it starts, ``end``
    past the blank line (LF or CRLF) that closes it. The first separator is looked for from
    ``start``; each search resumes where the last one stopped, so a chunk of many events is
    read once."""
    lf = buffer.find(b"\n\n", start)
    crlf = buffer.find(b"\r\n\r\n", start)
    begin = 0
    while lf >= 0 or crlf >= 0:
        if crlf >= 0 and (lf < 0 or crlf < lf):
            cut, end = crlf, crlf + 4
        else:
            cut, end = lf, lf + 2
        yield begin, cut
        begin = end
        if 0 <= lf < end:
            lf = buffer.find(b"\n\n", end)
        if 0 <= crlf < end:
            crlf = buffer.find(b"\r\n\r\n", end)


def complete(held: bytearray, chunk: bytes) -> bytes:
    """Add ``chunk`` to ``held`` and take out the whole events: what a relay sends now, so
    that an error event it may have to add never lands inside a half-sent one. An event
    over MAX_EVENT is let through as it comes."""
    start = max(0, len(held) - 3)  # what was held holds no boundary
    held += chunk
    lf = held.rfind(b"\n\n", start)
    crlf = held.rfind(b"\r\n\r\n", start)
    end = max(lf + 2 if lf >= 0 else 0, crlf + 4 if crlf >= 0 else 0)
    if end == 0 and len(held) > MAX_EVENT:
        end = len(held)
    ready = bytes(held[:end])
    del held[:end]
    return ready
