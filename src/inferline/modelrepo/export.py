"""Export a torch encoder to ONNX and quantise it (build time only)."""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

import torch

from inferline.modelrepo.manifest import packed_name
from inferline.modelrepo.torchmodel import Encoder, Exported

INPUTS = ["input_ids", "attention_mask"]
OPSET = 17


def export_onnx(model: Encoder, path: Path, output: str) -> None:
    """Trace to ONNX. The TorchScript exporter gives a graph that runs about 20% faster
    here than the torch.export-based one; the model's explicit mask keeps it correct.

    Two outputs: ``output`` (one row per batch row) and its packed form, [rows, texts per
    row, dim] (torchmodel.Encoder)."""
    ids = torch.tensor([[101, 7592, 102, 101, 2088, 102], [101, 7592, 102, 0, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 2, 2, 2], [1, 1, 1, 0, 0, 0]])
    axes = {name: {0: "batch", 1: "sequence"} for name in INPUTS}
    axes[output] = {0: "batch"}
    axes[packed_name(output)] = {0: "batch", 1: "texts"}
    model.eval()
    with warnings.catch_warnings(), torch.no_grad(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")  # tracer notes on shapes that are static here
        torch.onnx.export(
            Exported(model).eval(),
            (ids, mask),
            str(path),
            input_names=INPUTS,
            output_names=[output, packed_name(output)],
            dynamic_axes=axes,
            opset_version=OPSET,
            dynamo=False,
        )


def quantize_int8(src: Path, dst: Path) -> None:
    """Dynamic int8, per channel: as fast as per tensor here and far closer to fp32."""
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.getLogger().setLevel(logging.ERROR)  # the quantiser logs a pre-processing hint
    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=True)
