"""The raw-engine limit: texts straight into ONNX Runtime, no server, best configuration.

Timed end to end from texts: tokenise, sort by length, pad, run. Run as a module in its own
process so that nothing else shares its interpreter:

    python -m bench.raw MODEL.onnx TEXTS.jsonl [CONFIG-LABEL]
"""

from __future__ import annotations

import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import onnxruntime as ort

from inferline.engines.onnx import pad_batch
from inferline.engines.packing import pack_batch
from inferline.tokenizer import TextEncoder
from inferline.types import Item


@dataclass(frozen=True)
class Config:
    lanes: int
    threads: int
    batch: int
    pack: int = 0  # >0: each batch packed into rows this wide, as the engine does

    def label(self) -> str:
        packed = f", packed in rows of {self.pack}" if self.pack else ""
        lanes = f"{self.lanes} lane(s) x {self.threads} thread(s)"
        return f"{lanes}, sorted batches of {self.batch}{packed}"


CONFIGS = [Config(2, 1, 8), Config(2, 1, 16), Config(1, 2, 16), Config(2, 1, 16, pack=48)]


def measure(model: Path, encoder: TextEncoder, texts: list[str], cfg: Config) -> float:
    options = ort.SessionOptions()
    options.intra_op_num_threads = cfg.threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.set_denormal_as_zero", "1")  # as the engine
    # The pool's threads start after this and inherit its floating-point mode.
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    plain, packed = (o.name for o in session.get_outputs())

    def run(batch: list[Item]) -> None:
        if cfg.pack:
            ids, segments, _, _ = pack_batch(batch, cfg.pack)
            session.run([packed], {"input_ids": ids, "attention_mask": segments})
        else:
            ids, mask = pad_batch(batch)
            session.run([plain], {"input_ids": ids, "attention_mask": mask})

    run(encoder.encode(texts[:8]))  # warm-up
    started = time.perf_counter()
    items = encoder.encode(texts)
    items.sort(key=lambda i: i.tokens)
    batches = [items[i : i + cfg.batch] for i in range(0, len(items), cfg.batch)]
    with ThreadPoolExecutor(cfg.lanes) as pool:
        list(pool.map(run, batches))
    return len(texts) / (time.perf_counter() - started)


def main() -> None:
    model, texts_path = Path(sys.argv[1]), Path(sys.argv[2])
    texts = [json.loads(line)["text"] for line in texts_path.open()]
    encoder = TextEncoder(model.parent / "tokenizer.json", 256)
    # A third argument names the one configuration to run (a label printed as "best").
    configs = [c for c in CONFIGS if len(sys.argv) < 4 or c.label() == sys.argv[3]]
    if not configs:
        sys.exit(f"no configuration {sys.argv[3]!r}; they are: {[c.label() for c in CONFIGS]}")
    if len(configs) == 1:
        results = {configs[0].label(): measure(model, encoder, texts, configs[0])}
    else:
        # A search runs the configurations forwards, then backwards, and ranks them by
        # their mean: one pass would crown whichever ran while the shared machine was fast.
        runs: dict[str, list[float]] = {c.label(): [] for c in configs}
        for cfg in [*configs, *reversed(configs)]:
            runs[cfg.label()].append(measure(model, encoder, texts, cfg))
        results = {label: sum(v) / len(v) for label, v in runs.items()}
    best = max(results, key=lambda k: results[k])
    print(json.dumps({"best": best, "texts_per_s": results[best], "all": results}))


if __name__ == "__main__":
    main()
