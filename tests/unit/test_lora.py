"""LoRA adapters: what training saves, merged into plain weights, computes the same thing."""

from __future__ import annotations

import copy
from typing import Any

import torch
from transformers import BertConfig, BertModel

from inferline.modelrepo import lora


def tiny_bert() -> Any:
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=50,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
    )
    config._attn_implementation = "eager"
    return BertModel(config, add_pooling_layer=False).eval()


def test_merged_adapter_matches_the_trained_model() -> None:
    plain = tiny_bert()
    trained = copy.deepcopy(plain)
    lora.attach(trained, rank=4, alpha=8.0)
    with torch.no_grad():
        for p in trained.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    assert sum(p.numel() for p in trained.parameters() if p.requires_grad) < sum(
        p.numel() for p in plain.parameters()
    )
    ids = torch.tensor([[1, 5, 7, 9, 2], [1, 4, 2, 0, 0]])
    mask = (ids != 0).long()
    want = trained(input_ids=ids, attention_mask=mask).last_hidden_state
    lora.merge(plain, lora.adapter_state(trained))
    got = plain(input_ids=ids, attention_mask=mask).last_hidden_state
    assert torch.allclose(want, got, atol=1e-5)


def test_adapter_state_holds_only_what_training_changed() -> None:
    model = tiny_bert()
    lora.attach(model, rank=4, alpha=8.0)
    state = lora.adapter_state(model)
    assert state and all(k.endswith((".lora_a", ".lora_b")) or "LayerNorm" in k for k in state)
    assert not any("word_embeddings" in k for k in state)
