"""Low-rank adapters (LoRA) for the encoder's linear layers: trained at build time, merged
into the weights before export, so serving runs a plain fine-tuned graph."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

# Every linear layer of a BERT block: attention projections and the feed-forward pair.
TARGETS = ("query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense")


class LoRALinear(nn.Module):
    def __init__(self, base: nn.Linear, rank: int, alpha: float) -> None:
        super().__init__()
        self.base = base
        self.scale = alpha / rank
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.base(x) + (x @ self.lora_a.t() @ self.lora_b.t()) * self.scale
        return out


def _targets(bert: Any) -> list[tuple[str, nn.Linear]]:
    found = []
    for name, module in bert.encoder.named_modules():
        if isinstance(module, nn.Linear) and any(name.endswith(t) for t in TARGETS):
            found.append((name, module))
    return found


def _set(root: nn.Module, dotted: str, module: nn.Module) -> None:
    parent_name, _, child = dotted.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, module)


def attach(bert: Any, rank: int, alpha: float) -> None:
    """Freeze the encoder and wrap its linear layers with trainable adapters. LayerNorm
    weights stay trainable too (a few thousand numbers)."""
    for p in bert.parameters():
        p.requires_grad_(False)
    for name, linear in _targets(bert):
        _set(bert.encoder, name, LoRALinear(linear, rank, alpha))
    for name, p in bert.encoder.named_parameters():
        if "LayerNorm" in name:
            p.requires_grad_(True)


def adapter_state(bert: Any) -> dict[str, torch.Tensor]:
    """The merged weight deltas and LayerNorm values: what training changed, nothing else."""
    state: dict[str, torch.Tensor] = {}
    for name, module in bert.encoder.named_modules():
        if isinstance(module, LoRALinear):
            state[f"encoder.{name}.lora_a"] = (module.lora_a * module.scale).detach().clone()
            state[f"encoder.{name}.lora_b"] = module.lora_b.detach().clone()
    for name, p in bert.encoder.named_parameters():
        if "LayerNorm" in name:
            state[f"encoder.{name}"] = p.detach().clone()
    return state


def merge(bert: Any, state: dict[str, torch.Tensor]) -> None:
    """Apply a saved adapter to a plain BertModel in place (build time)."""
    with torch.no_grad():
        for key, value in state.items():
            if key.endswith(".lora_a"):
                prefix = key.removesuffix(".lora_a").removeprefix("encoder.")
                linear = bert.encoder.get_submodule(prefix)
                b = state[f"encoder.{prefix}.lora_b"].to(torch.float32)
                linear.weight += b @ value.to(torch.float32)
            elif not key.endswith(".lora_b"):
                bert.encoder.get_parameter(key.removeprefix("encoder.")).copy_(value)
