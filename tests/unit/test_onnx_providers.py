"""Execution-provider choice of OnnxEngine: CPU, CUDA when present, a clear error otherwise."""

from __future__ import annotations

import logging

import onnxruntime as ort
import pytest

from inferline.engines.onnx import providers_for
from inferline.errors import EngineError


def test_cpu_is_cpu_only() -> None:
    assert providers_for("cpu") == ["CPUExecutionProvider"]


def test_cuda_without_the_gpu_build_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    with pytest.raises(EngineError, match="install onnxruntime-gpu"):
        providers_for("cuda")


def test_cuda_preloads_the_cuda_libraries(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(
        ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"]
    )
    monkeypatch.setattr(ort, "preload_dlls", lambda: calls.append("preload"), raising=False)
    assert providers_for("cuda") == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert calls == ["preload"]


def test_a_failed_preload_is_logged_not_raised(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> None:
        raise OSError("libcudnn.so.9: cannot open shared object file")

    monkeypatch.setattr(
        ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"]
    )
    monkeypatch.setattr(ort, "preload_dlls", broken, raising=False)
    with caplog.at_level(logging.WARNING, logger="inferline.engines.onnx"):
        assert providers_for("cuda")[0] == "CUDAExecutionProvider"
    assert "libcudnn" in caplog.text
