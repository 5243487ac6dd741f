"""OnnxEngine: ONNX Runtime in process, on the CPU or through the CUDA provider."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from inferline.engines.packing import pack_batch
from inferline.errors import EngineError, NotRun
from inferline.types import EngineInfo, FloatArray, Item

log = logging.getLogger(__name__)


def providers_for(device: str) -> list[str]:
    import onnxruntime as ort

    if device == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise EngineError(
                "device=cuda, but this onnxruntime has no CUDA provider: install onnxruntime-gpu"
            )
        _preload_cuda(ort)
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def _preload_cuda(ort: Any) -> None:
    """Load CUDA and cuDNN from the nvidia-* wheels (onnxruntime-gpu[cuda], or torch's), so
    that the CUDA provider finds them without LD_LIBRARY_PATH. Libraries already on the
    loader's path win; a failure here surfaces as the session's own load error."""
    preload = getattr(ort, "preload_dlls", None)  # onnxruntime >= 1.21
    if preload is not None:
        try:
            preload()
        except Exception as exc:  # advisory: the session reports the real error
            log.warning("onnxruntime.preload_dlls failed: %s", exc)


def pad_batch(items: Sequence[Item]) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Right-pad token ids to the longest item; return (input_ids, attention_mask)."""
    width = max(item.tokens for item in items)
    ids = np.zeros((len(items), width), dtype=np.int64)
    mask = np.zeros((len(items), width), dtype=np.int64)
    for row, item in enumerate(items):
        ids[row, : item.tokens] = item.ids
        mask[row, : item.tokens] = 1
    return ids, mask


def lower_priority(nice: int) -> None:
    """Raise the calling thread's niceness to ``nice`` (never lower it: that needs
    privileges). Linux keeps a niceness per thread; elsewhere this would renice the whole
    process, so it does nothing there."""
    if sys.platform != "linux" or nice <= 0:
        return
    try:
        current = os.getpriority(os.PRIO_PROCESS, 0)
        if nice > current:
            os.setpriority(os.PRIO_PROCESS, 0, nice)
    except OSError as exc:  # advisory: a lane at the loop's priority still works
        log.warning("could not set the niceness of an inference thread: %s", exc)


class OnnxEngine:
    """One ONNX Runtime session, called from ``lanes`` threads at once.

    Concurrent ``run`` calls on one session are safe; with one intra-op thread each, two
    lanes match two separate sessions in speed (measured) at half the memory.
    """

    def __init__(
        self,
        path: Path,
        *,
        name: str,
        output: str,
        output_dim: int,
        max_tokens: int,
        device: str = "cpu",
        lanes: int = 2,
        intra_op_threads: int = 1,
        nice: int = 0,
        packed_output: str | None = None,
        pack_width: int = 0,
    ) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        # A masked attention score's exp is a denormal, which the CPU computes slowly: the
        # softmax of a packed batch (half its keys masked) took 4x as long (measured).
        options.add_session_config_entry("session.set_denormal_as_zero", "1")
        try:
            self._session = ort.InferenceSession(
                str(path), options, providers=providers_for(device)
            )
        except EngineError:
            raise
        except Exception as exc:
            raise EngineError(f"could not load {path.name}: {exc}") from exc
        self._output = output
        # Short texts share rows when the graph has a packed output (engines/packing.py).
        self._packed = packed_output if pack_width > 0 else None
        self._width = pack_width
        self._pool = ThreadPoolExecutor(
            lanes, thread_name_prefix=f"onnx-{name}", initializer=lower_priority, initargs=(nice,)
        )
        # Threads inherit the floating-point mode of the thread that starts them, and ONNX
        # Runtime sets denormals-as-zero on the thread that created the session: start the
        # lanes here, not later from the event loop.
        started = threading.Barrier(lanes + 1)
        for _ in range(lanes):
            self._pool.submit(started.wait)
        started.wait()
        self._info = EngineInfo(
            name=name,
            inputs=("input_ids", "attention_mask"),
            output=output,
            output_dim=output_dim,
            max_tokens=max_tokens,
            device=self._session.get_providers()[0],
            lanes=lanes,
            engine="onnx",
            row_width=pack_width if self._packed else 0,
        )

    @property
    def info(self) -> EngineInfo:
        return self._info

    @property
    def ready(self) -> bool:
        return True  # loaded in the constructor; the service's warm-up batch does the rest

    async def start(self) -> None:
        return None

    async def infer(self, items: Sequence[Item]) -> Sequence[FloatArray | BaseException]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._on_lane, items)

    def _on_lane(self, items: Sequence[Item]) -> list[FloatArray | BaseException]:
        """A lane takes up a batch, which may have waited for it: items the batch no longer
        wants (``live()``, batching.py) are answered NotRun instead of run."""
        live = getattr(items, "live", None)
        wanted: list[bool] | None = live() if live is not None else None
        if wanted is None or all(wanted):
            return list(self.run_sync(items))
        kept = [item for item, keep in zip(items, wanted, strict=True) if keep]
        outputs = iter(self.run_sync(kept) if kept else ())
        skipped = "not run: its deadline passed, or its caller left, before a lane was free"
        return [next(outputs) if keep else NotRun(skipped) for keep in wanted]

    def run_sync(self, items: Sequence[Item]) -> list[FloatArray]:
        """Run one batch on the calling thread (the lanes call this; so do offline tools)."""
        if self._packed is not None:
            ids, segments, row, slot = pack_batch(items, self._width)
            return list(self._run(self._packed, ids, segments, len(items))[row, slot])
        ids, mask = pad_batch(items)
        return list(self._run(self._output, ids, mask, len(items)))

    def _run(self, output: str, ids: Any, mask: Any, count: int) -> Any:
        feeds: dict[str, Any] = {"input_ids": ids, "attention_mask": mask}
        try:
            return self._session.run([output], feeds)[0]
        except Exception as exc:
            raise EngineError(f"ONNX Runtime failed on a batch of {count}") from exc

    async def close(self) -> None:
        # Waits for the lanes' running batches, off the event loop (it served other calls).
        await asyncio.to_thread(self._pool.shutdown, wait=True, cancel_futures=False)
