"""StreamMeter: watches a relayed OpenAI answer pass by, without changing a byte of it, and
records time to first token, output tokens per second and token counts.

In a stream, each server-sent event with text in ``choices[].delta.content`` (chat) or
``choices[].text`` (completions) counts as one token, which is what OpenAI, vLLM and
Ollama send; a ``usage`` object (``stream_options.include_usage``) replaces the count with
the upstream's own. A non-streamed answer gives its ``usage`` only.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from inferline.telemetry.metrics import Metrics

ENGINE = "openai"  # the engine label of the metrics


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

    def feed(self, chunk: bytes) -> None:
        self._buffer += chunk
        if not self.stream:
            return
        while True:
            cut, size = _boundary(self._buffer)
            if cut < 0:
                return
            event = bytes(self._buffer[:cut])
            del self._buffer[: cut + size]
            self._event(event)

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
            if self._buffer.strip():
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


def _boundary(buffer: bytearray) -> tuple[int, int]:
    """Where the first event ends (a blank line, LF or CRLF) and the separator's size."""
    lf = buffer.find(b"\n\n")
    crlf = buffer.find(b"\r\n\r\n")
    if crlf >= 0 and (lf < 0 or crlf < lf):
        return crlf, 4
    return lf, 2
