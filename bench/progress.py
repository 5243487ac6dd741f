"""Progress of a benchmark run on stderr."""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Iterator


class Progress:
    """Timestamped lines on stderr; on a terminal, a ticking line while a step runs."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.tty = sys.stderr.isatty()

    def stamp(self) -> str:
        elapsed = int(time.monotonic() - self.started)
        return f"[{elapsed // 60:02d}:{elapsed % 60:02d}]"

    def say(self, text: str) -> None:
        print(f"{self.stamp()} {text}", file=sys.stderr, flush=True)

    @contextlib.contextmanager
    def step(self, text: str, seconds: float | None = None) -> Iterator[None]:
        if not self.tty:
            yield
            return
        done = threading.Event()
        began = time.monotonic()

        def tick() -> None:
            while not done.wait(0.5):
                spent = time.monotonic() - began
                left = f"{spent:4.0f}/{seconds:.0f} s" if seconds else f"{spent:4.0f} s"
                sys.stderr.write(f"\r{self.stamp()} {text} {left}\x1b[K")
                sys.stderr.flush()

        ticker = threading.Thread(target=tick, daemon=True)
        ticker.start()
        try:
            yield
        finally:
            done.set()
            ticker.join()
            sys.stderr.write("\r\x1b[K")
