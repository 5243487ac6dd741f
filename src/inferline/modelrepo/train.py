"""``inferline model train``: fine-tune the sentiment model with LoRA (build time only).

Seeded; trains on the training split of ../shared/data/sentiment (see ``data.py`` for the
split) and writes a small safetensors adapter plus the head. ``inferline model build``
merges it into the exported sentiment graph; the embedding graph keeps the original weights.
"""

from __future__ import annotations

import json
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

import torch

from inferline.engines.onnx import pad_batch
from inferline.modelrepo import lora
from inferline.modelrepo.data import Example, load_split
from inferline.modelrepo.torchmodel import Encoder, load_bert
from inferline.tokenizer import TextEncoder

SEED = 0
RANK, ALPHA = 16, 32.0
EPOCHS = 3
BATCH = 32
LR_ADAPTER, LR_HEAD = 1e-3, 3e-3
TRAIN_MAX_TOKENS = 128  # the sentences are short; 128 covers >99% of them
RATING_WEIGHT = 0.5  # weight of the rating regression beside the 3-class loss
TARGET_DOMAIN, TARGET_REPEATS = "amazon_reviews", 2  # reviews are what the service is for


def batches(examples: Sequence[Example], rng: random.Random) -> list[list[Example]]:
    # Bucket by length so that padding stays low, then shuffle the buckets.
    order = sorted(examples, key=lambda e: len(e.text))
    groups = [order[i : i + BATCH] for i in range(0, len(order), BATCH)]
    rng.shuffle(groups)
    return groups


def tensors(tok: TextEncoder, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and attention mask, padded as the server pads them."""
    ids, mask = pad_batch(tok.encode(texts))
    return torch.from_numpy(ids), torch.from_numpy(mask)


def train(data_dir: Path, out_path: Path, log: TextIO = sys.stderr) -> dict[str, float]:
    from safetensors.torch import save_file

    from inferline.modelrepo.torchmodel import base_dir

    torch.manual_seed(SEED)
    rng = random.Random(SEED)
    train_set, val_set = load_split(data_dir)
    # Reviews are the target domain: each epoch sees them twice.
    train_set = train_set + [e for e in train_set if e.source == TARGET_DOMAIN] * (
        TARGET_REPEATS - 1
    )
    tok = TextEncoder(base_dir() / "tokenizer.json", TRAIN_MAX_TOKENS)
    bert = load_bert()
    lora.attach(bert, RANK, ALPHA)
    head = torch.nn.Linear(384, 3)
    model = Encoder(bert, head)
    params = [
        {"params": [p for p in bert.parameters() if p.requires_grad], "lr": LR_ADAPTER},
        {"params": head.parameters(), "lr": LR_HEAD},
    ]
    optimizer = torch.optim.AdamW(params, weight_decay=0.01)
    steps = EPOCHS * ((len(train_set) + BATCH - 1) // BATCH)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=[LR_ADAPTER, LR_HEAD], total_steps=steps, pct_start=0.1
    )
    print(
        f"training on {len(train_set)} sentences, {EPOCHS} epochs, {steps} steps; "
        f"validating on {len(val_set)}",
        file=log,
    )
    started = time.monotonic()
    step = 0
    for epoch in range(EPOCHS):
        model.train()
        for group in batches(train_set, rng):
            ids, mask = tensors(tok, [e.text for e in group])
            labels = torch.tensor([e.label for e in group])
            ratings = torch.tensor([e.rating / 4.0 for e in group]).clamp(-1.0, 1.0)
            probs = model(ids, mask)
            # The class loss, plus the served score P(Positive) - P(Negative) regressed on the
            # human rating: the rating says how far from neutral a sentence is, which the
            # three labels alone do not.
            loss = torch.nn.functional.nll_loss(torch.log(probs.clamp_min(1e-9)), labels)
            polarity = probs[:, 2] - probs[:, 0]
            loss = loss + RATING_WEIGHT * torch.nn.functional.mse_loss(polarity, ratings)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            step += 1
            if step % 50 == 0:
                rate = step / (time.monotonic() - started)
                print(
                    f"  epoch {epoch + 1} step {step}/{steps} loss {loss.item():.3f} "
                    f"({rate:.1f} steps/s, {(steps - step) / rate:.0f} s left)",
                    file=log,
                    flush=True,
                )
    model.eval()
    state = lora.adapter_state(bert)
    state["head.weight"] = head.weight.detach().clone()
    state["head.bias"] = head.bias.detach().clone()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.to(torch.float16).contiguous() for k, v in state.items()}, str(out_path))
    info = {
        "seed": SEED,
        "rank": RANK,
        "alpha": ALPHA,
        "epochs": EPOCHS,
        "batch": BATCH,
        "train_sentences": len(train_set),
        "rating_weight": RATING_WEIGHT,
        "target_domain_repeats": TARGET_REPEATS,
        "seconds": round(time.monotonic() - started),
    }
    out_path.with_suffix(".json").write_text(json.dumps(info, indent=2) + "\n")
    print(json.dumps(info), file=log)
    return {k: float(v) for k, v in info.items()}
