"""The engine factory: the one place that knows which engine serves each model.

The models config (``engines/config.py``) picks an engine per model; a model that it does
not name runs locally on ONNX Runtime. Remote engines are imported only when configured, so
that a local deployment needs neither httpx nor the ``remote`` extra.
"""

from __future__ import annotations

from pathlib import Path

from inferline.config import Settings
from inferline.engines.config import ModelsConfig, OipSpec, OpenAISpec, load
from inferline.modelrepo.manifest import Manifest
from inferline.telemetry.metrics import Metrics
from inferline.types import ChatEngine, Engine


def load_config(path: Path | None) -> ModelsConfig:
    """The models config at ``path`` (None: every model local); ValueError when invalid."""
    return load(path)


def create_engine(
    name: str, settings: Settings, manifest: Manifest, config: ModelsConfig, metrics: Metrics
) -> Engine:
    """The engine of the batched model ``name`` (``sentiment`` or ``embedding``)."""
    spec = config.spec(name)
    graph = manifest.models[name]
    if isinstance(spec, OipSpec):
        from inferline.engines.oip import OipEngine

        return OipEngine(name, spec, output_dim=graph.output_dim, max_tokens=manifest.max_tokens)
    if isinstance(spec, OpenAISpec):
        from inferline.engines.openai import OpenAIEngine

        return OpenAIEngine(name, spec, output_dim=graph.output_dim, max_tokens=manifest.max_tokens)
    from inferline.engines.onnx import OnnxEngine

    s = settings
    precision = s.precision if s.precision != "auto" else ("fp32" if s.device == "cuda" else "int8")
    return OnnxEngine(
        s.model_dir / graph.files[precision],
        name=name,
        output=graph.output,
        output_dim=graph.output_dim,
        max_tokens=manifest.max_tokens,
        device=s.device,
        lanes=s.lanes,
        intra_op_threads=s.intra_op_threads,
        nice=s.lane_nice,
        packed_output=graph.packed_output,
        pack_width=s.pack_width,
    )


def create_chat_engines(config: ModelsConfig, metrics: Metrics) -> dict[str, ChatEngine]:
    """The chat/completions relays, by the model id that clients ask for."""
    chats = config.chat_models()
    if not chats:
        return {}
    from inferline.engines.openai import OpenAIChat

    return {name: OpenAIChat(name, spec, metrics) for name, spec in chats.items()}
