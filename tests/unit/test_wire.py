"""The gathering transport: one socket write per event-loop step, nothing lost on close."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from inferline.api.wire import _Gathered


class Recorder:
    """Stands in for uvloop's transport: records writes and whether it was closed."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str) -> Any:
        return ("127.0.0.1", 8000) if name == "sockname" else None


def gathered(recorder: Recorder) -> Any:
    return _Gathered(recorder, asyncio.get_running_loop())  # type: ignore[arg-type]


def run(case: Callable[[], Coroutine[Any, Any, None]]) -> Callable[[], None]:
    """A plain test that runs ``case`` on a fresh event loop."""

    def test() -> None:
        asyncio.run(case())

    test.__name__ = case.__name__
    return test


@run
async def test_writes_of_one_step_go_out_as_one() -> None:
    recorder = Recorder()
    transport = gathered(recorder)
    transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    transport.write(b"{}")
    assert recorder.writes == []  # not before the step ends
    await asyncio.sleep(0)
    assert recorder.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"]
    transport.write(b"next")
    await asyncio.sleep(0)
    assert recorder.writes[1:] == [b"next"]


@run
async def test_close_sends_what_is_gathered_first() -> None:
    recorder = Recorder()
    transport = gathered(recorder)
    transport.write(b"last words")
    transport.close()
    assert recorder.writes == [b"last words"] and recorder.closed
    await asyncio.sleep(0)  # the scheduled flush finds nothing left
    assert recorder.writes == [b"last words"]


@run
async def test_nothing_is_written_to_a_closing_transport() -> None:
    recorder = Recorder()
    transport = gathered(recorder)
    transport.write(b"too late")
    recorder.closed = True  # the peer went away before the step ended
    await asyncio.sleep(0)
    assert recorder.writes == []


@run
async def test_everything_else_is_the_real_transport() -> None:
    recorder = Recorder()
    transport = gathered(recorder)
    assert transport.get_extra_info("sockname") == ("127.0.0.1", 8000)
    assert transport.is_closing() is False
