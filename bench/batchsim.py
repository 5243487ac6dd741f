"""How good are the batches? A cost model of one ONNX Runtime call, and a closed-loop
simulation of batching rules under it (docs/architecture.md, "Where time goes").

    python -m bench.batchsim [--model sentiment.int8.onnx] [--data TEXTS.jsonl]

1. Times one single-thread session over a grid of batch size x width and fits
   cost(n, w) = fixed + row * n + token * n * w + square * n * w^2 (milliseconds).
2. Simulates 2 lanes fed by a closed loop: `single` (62 texts waiting, 1 a request) and
   `multi` (8 requests of 16), with the batcher's own rule (`grow`) and with the optimal
   grouping of each window (dynamic programming over the length-sorted window, batch size
   at most 16, keeping the batch that holds the oldest text). Prints texts/s under the
   model against whole-set-sorted batches of 16, the raw limit's shape.
"""

from __future__ import annotations

import argparse
import heapq
import json
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from bench.common import DEFAULT_DATA
from inferline.batching import BatcherLimits
from inferline.config import default_model_dir
from inferline.grouping import grow
from inferline.tokenizer import TextEncoder

Cost = Callable[[int, int], float]
Rule = Callable[[Sequence[int], int], list[int]]  # (lengths, oldest) -> indices of a batch


def fit_cost(model: Path) -> tuple[Cost, list[float]]:
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    rows, times = [], []
    for w in (8, 16, 32, 64, 128):
        for n in (1, 2, 4, 8, 16):
            ids = np.full((n, w), 1000, dtype=np.int64)
            feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
            session.run(None, feeds)
            reps = max(3, 2000 // (n * w))
            started = time.perf_counter()
            for _ in range(reps):
                session.run(None, feeds)
            times.append((time.perf_counter() - started) / reps * 1e3)
            rows.append([1.0, n, n * w, n * w * w])
    x, y = np.array(rows), np.array(times)
    # Relative least squares: small and large batches weigh alike.
    coef = np.linalg.lstsq(x / y[:, None], np.ones_like(y), rcond=None)[0]
    a, b, c, d = (float(v) for v in coef)
    return (lambda n, w: a + b * n + c * n * w + d * n * w * w), [a, b, c, d]


def by_grow(lengths: Sequence[int], oldest: int) -> list[int]:
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    lo, hi = grow([lengths[i] for i in order], order.index(oldest), BatcherLimits())
    return order[lo : hi + 1]


def by_dp(cost: Cost, most: int = 16) -> Rule:
    def rule(lengths: Sequence[int], oldest: int) -> list[int]:
        order = sorted(range(len(lengths)), key=lambda i: lengths[i])
        s = [lengths[i] for i in order]
        best, cut = [0.0] + [float("inf")] * len(s), [0] * (len(s) + 1)
        for j in range(1, len(s) + 1):
            for k in range(max(0, j - most), j):
                total = best[k] + cost(j - k, s[j - 1])
                if total < best[j]:
                    best[j], cut[j] = total, k
        at, j = order.index(oldest), len(s)
        while cut[j] > at:
            j = cut[j]
        return order[cut[j] : j]

    return rule


def simulate(rule: Rule, cost: Cost, lengths: list[int], clients: int, per: int) -> float:
    """Texts/s of 2 lanes when `clients` each keep `per` texts in flight."""
    rng = random.Random(1)
    queue: list[tuple[int, int]] = []  # (length, client), oldest first
    left = dict.fromkeys(range(clients), per)
    for c in range(clients):
        queue += [(rng.choice(lengths), c) for _ in range(per)]
    now, done = 0.0, 0
    running: list[tuple[float, int, list[tuple[int, int]]]] = []  # (finish, id, batch)

    def start() -> None:
        nonlocal queue
        if queue:
            picked = set(rule([q[0] for q in queue], 0))
            batch = [q for i, q in enumerate(queue) if i in picked]
            queue = [q for i, q in enumerate(queue) if i not in picked]
            finish = now + cost(len(batch), max(q[0] for q in batch))
            heapq.heappush(running, (finish, id(batch), batch))

    start()
    start()
    for _ in range(4000):
        now, _, batch = heapq.heappop(running)
        for _, c in batch:
            done += 1
            left[c] -= 1
            if left[c] == 0:
                left[c] = per
                queue += [(rng.choice(lengths), c) for _ in range(per)]
        start()
    return done / now * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=default_model_dir() / "sentiment.int8.onnx")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args()
    texts = [json.loads(line)["text"] for line in args.data.read_text().splitlines() if line]
    encoder = TextEncoder(args.model.parent / "tokenizer.json", 256)
    lengths = [item.tokens for item in encoder.encode(texts)]
    cost, coef = fit_cost(args.model)
    print("cost(n, w) ms = {:.3f} + {:.4f} n + {:.5f} n w + {:.7f} n w^2".format(*coef))
    ordered = sorted(lengths)
    groups = [ordered[i : i + 16] for i in range(0, len(ordered), 16)]
    raw = 2 * len(ordered) / sum(cost(len(g), max(g)) for g in groups) * 1e3
    print(f"whole-set-sorted batches of 16 (the raw limit's shape): {raw:.0f} texts/s")
    for name, rule in (("grow (the batcher)", by_grow), ("optimal window grouping", by_dp(cost))):
        for workload, clients, per in (("single", 62, 1), ("multi", 8, 16)):
            rate = simulate(rule, cost, lengths, clients, per)
            print(f"{name}, {workload}: {rate:.0f} texts/s, {rate / raw:.3f} of raw")


if __name__ == "__main__":
    main()
