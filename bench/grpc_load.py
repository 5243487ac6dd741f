"""Closed-loop gRPC load for the OIP ModelInfer call: N concurrent callers, each sending
batches of texts back to back. Prints JSON: texts/s and latency percentiles.

    python -m bench.grpc_load HOST:PORT TEXTS.jsonl --connections 8 --batch 16 --duration 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

import grpc
import uvloop

from inferline.grpc import open_inference_grpc_pb2 as pb
from inferline.grpc import open_inference_grpc_pb2_grpc as pb_grpc


def request(texts: list[str]) -> pb.ModelInferRequest:
    tensor = pb.ModelInferRequest.InferInputTensor(
        name="text", datatype="BYTES", shape=[len(texts)]
    )
    tensor.contents.bytes_contents.extend(t.encode() for t in texts)
    return pb.ModelInferRequest(model_name="sentiment", inputs=[tensor])


async def run(
    target: str, texts: list[str], connections: int, batch: int, duration: float
) -> dict[str, float]:
    requests = [request(texts[i : i + batch]) for i in range(0, len(texts) - batch + 1, batch)]
    latencies: list[float] = []
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        await stub.ModelInfer(requests[0])
        end = time.perf_counter() + duration

        async def caller(offset: int) -> None:
            i = offset
            while time.perf_counter() < end:
                started = time.perf_counter()
                await stub.ModelInfer(requests[i % len(requests)])
                latencies.append(time.perf_counter() - started)
                i += connections

        started = time.perf_counter()
        await asyncio.gather(*(caller(c) for c in range(connections)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "texts_per_s": len(latencies) * batch / elapsed,
        "p50_ms": 1e3 * latencies[len(latencies) // 2],
        "p99_ms": 1e3 * latencies[int(len(latencies) * 0.99)],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("target")
    parser.add_argument("texts", type=Path)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--duration", type=float, default=10.0)
    args = parser.parse_args()
    texts = [json.loads(line)["text"] for line in args.texts.open()]
    result = uvloop.run(run(args.target, texts, args.connections, args.batch, args.duration))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
