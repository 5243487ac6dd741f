"""``inferline model train-head``: a logistic-regression sentiment head on frozen embeddings.

Seeded and deterministic on the CPU. Trained on the training split of the shared data and
scored on the fixed validation split (see :mod:`inferline.modelrepo.data`).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

import numpy as np
import torch

from inferline.modelrepo.data import Example, load_split
from inferline.modelrepo.evaluate import score
from inferline.modelrepo.torchmodel import Encoder, load_bert
from inferline.modelrepo.train import tensors
from inferline.tokenizer import TextEncoder

SEED = 0
L2 = 1e-3


def embed(
    encoder: Encoder, tok: TextEncoder, texts: Sequence[str], batch: int = 64
) -> torch.Tensor:
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = torch.zeros(len(texts), 384)
    with torch.no_grad():
        for start in range(0, len(order), batch):
            idx = order[start : start + batch]
            out[idx] = encoder(*tensors(tok, [texts[i] for i in idx]))
    return out


def fit(features: torch.Tensor, labels: torch.Tensor) -> torch.nn.Linear:
    torch.manual_seed(SEED)
    head = torch.nn.Linear(features.shape[1], 3)
    opt = torch.optim.LBFGS(head.parameters(), max_iter=500, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(head(features), labels)
        loss = loss + L2 * head.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return head.eval()


def train_head(data_dir: Path, out_path: Path, log: TextIO = sys.stderr) -> dict[str, float]:
    from safetensors.torch import save_file

    torch.manual_seed(SEED)
    train, val = load_split(data_dir)
    print(f"{len(train)} training and {len(val)} validation sentences", file=log)
    encoder, tok = _encoder()
    x_train = embed(encoder, tok, [e.text for e in train])
    y_train = torch.tensor([e.label for e in train])
    head = fit(x_train, y_train)
    metrics = evaluate_head(head, embed(encoder, tok, [e.text for e in val]), val)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    save_file(
        {"weight": head.weight.detach().contiguous(), "bias": head.bias.detach().contiguous()},
        str(out_path),
    )
    out_path.with_suffix(".json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(json.dumps(metrics, indent=2), file=log)
    return metrics


def evaluate_head(
    head: torch.nn.Linear, features: torch.Tensor, val: list[Example]
) -> dict[str, float]:
    with torch.no_grad():
        probs = torch.softmax(head(features), dim=-1).numpy()
    gold = np.array([e.label for e in val])
    amazon = np.array([e.source == "amazon_reviews" for e in val])
    result = {}
    for name, sel in (("amazon", amazon), ("all", np.ones_like(amazon))):
        s = score(
            gold[sel], probs[sel].argmax(1), (probs[sel, 2] - probs[sel, 0]).astype(np.float64)
        )
        result[f"{name}_polar_accuracy"] = round(s.polar_accuracy, 4)
        result[f"{name}_macro_f1"] = round(s.macro_f1, 4)
    return result


def _encoder() -> tuple[Encoder, TextEncoder]:
    from inferline.modelrepo.build import MAX_TOKENS
    from inferline.modelrepo.torchmodel import base_dir

    return Encoder(load_bert()), TextEncoder(base_dir() / "tokenizer.json", MAX_TOKENS)
