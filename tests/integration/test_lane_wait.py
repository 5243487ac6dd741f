"""One batch a model may wait for a lane (cut early, so that the lane never idles). A text
in it whose deadline passes, or whose caller leaves, meanwhile is not run."""

from __future__ import annotations

import asyncio
import time

import pytest

from inferline.config import Settings
from inferline.errors import DeadlineExceeded
from inferline.service import Service
from tests.conftest import model_dir

pytestmark = pytest.mark.integration

LONG = " ".join(["the battery died after a week and the screen flickered"] * 30)
BUSY = 64  # long texts in one batch: the lane's work for a good part of a second


def test_texts_that_expire_or_are_left_while_waiting_for_a_lane_are_not_run() -> None:
    async def scenario() -> None:
        settings = Settings(
            model_dir=model_dir(),
            lanes=1,
            pack_width=0,
            max_batch_size=BUSY,
            max_batch_tokens=BUSY * 256,
        )
        service = Service(settings)
        await service.start()
        ran: list[int] = []
        service.models["sentiment"].batcher._on_batch = lambda report: ran.append(report.size)
        try:
            # The lane takes the long batch; the next text's batch is cut at once and waits.
            busy = asyncio.create_task(service.results("sentiment", [LONG] * BUSY))
            await asyncio.sleep(0.05)
            with pytest.raises(DeadlineExceeded):
                await service.results("sentiment", ["short"], time.monotonic() + 0.03)
            assert len(await busy) == BUSY

            busy = asyncio.create_task(service.results("sentiment", [LONG] * BUSY))
            await asyncio.sleep(0.05)
            leaving = asyncio.create_task(service.results("sentiment", ["leaving"]))
            await asyncio.sleep(0.05)
            leaving.cancel()  # its caller goes while its batch waits for the lane
            assert len(await busy) == BUSY
            await asyncio.sleep(0.2)  # the waiting batch has had its turn
            assert ran == [BUSY, BUSY], ran  # neither the late text nor the left one ran
        finally:
            await service.close(grace=5)

    asyncio.run(scenario())
