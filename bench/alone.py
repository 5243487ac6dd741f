"""One text at a time, straight into ONNX Runtime: the floor under any server's latency at
a light load, where each request finds the model idle.

    python -m bench.alone [--gaps-ms 0 2 8] [--texts 600]

For each idle gap between texts (a light load: at 100 texts/s the mean gap is 10 ms), the
per-text time of the int8 sentiment graph, as the engine runs it (packed output, one text
in a row of its own), with 1 and with 2 intra-op threads; percentiles over the texts of
``bench/`` 's default data. No server, no batching, no client.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import onnxruntime as ort

from bench.common import DEFAULT_DATA
from inferline.config import Settings
from inferline.engines.packing import pack_batch
from inferline.loadtest.stats import percentile
from inferline.tokenizer import TextEncoder


def session(model: Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.set_denormal_as_zero", "1")  # as the engine
    return ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])


def per_text_ms(
    model: Path, encoder: TextEncoder, texts: list[str], threads: int, gap: float
) -> list[float]:
    run = session(model, threads)
    packed = run.get_outputs()[1].name
    feeds = []
    for item in encoder.encode(texts):
        ids, segments, _, _ = pack_batch([item], 0)
        feeds.append({"input_ids": ids, "attention_mask": segments})
    for feed in feeds[:20]:  # warm-up
        run.run([packed], feed)
    times = []
    for feed in feeds:
        time.sleep(gap)
        started = time.perf_counter()
        run.run([packed], feed)
        times.append(1e3 * (time.perf_counter() - started))
    return sorted(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gaps-ms", type=float, nargs="+", default=[0.0, 2.0, 8.0])
    parser.add_argument("--texts", type=int, default=600)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args()
    model_dir = Settings().model_dir
    texts = [json.loads(line)["text"] for line in args.data.open()][: args.texts]
    encoder = TextEncoder(model_dir / "tokenizer.json", 256)
    model = model_dir / "sentiment.int8.onnx"
    print("idle gap | intra-op threads | p50 ms | p90 ms | p99 ms")
    for gap in args.gaps_ms:
        for threads in (1, 2):
            ms = per_text_ms(model, encoder, texts, threads, gap / 1000)
            cells = [f"{percentile(ms, p):.2f}" for p in (50, 90, 99)]
            print(f"{gap:g} ms | {threads} | " + " | ".join(cells), flush=True)


if __name__ == "__main__":
    main()
