"""LitServe: dynamic batching with max_batch_size 32 and batch_timeout 5 ms (its docs' example).

One inference worker process (``workers_per_device=1`` on the CPU) runs one batch at a time,
so ONNX Runtime gets both cores: 2 intra-op threads (``PEER_THREADS``). A request may carry
several texts; a batch is the texts of all its requests, padded to the longest.
"""

from typing import Any

import litserve as ls
from peer_model import SentimentModel, parse, port, respond, split, threads

Request = tuple[list[str], bool]


class SentimentAPI(ls.LitAPI):
    def setup(self, device: str) -> None:
        self.model = SentimentModel(threads=threads(2))

    # No annotations here: LitServe builds its endpoint from them, and takes a plain
    # parameter as the JSON body.
    def decode_request(self, request):  # type: ignore[no-untyped-def]
        return parse(request)

    def batch(self, inputs: list[Request]) -> list[Request]:
        return inputs

    def predict(self, batch: list[Request]) -> list[tuple[list[dict[str, Any]], bool]]:
        flat = [text for texts, _ in batch for text in texts]
        pieces = split(self.model.predict(flat), [len(texts) for texts, _ in batch])
        return [(piece, single) for piece, (_, single) in zip(pieces, batch, strict=True)]

    def unbatch(self, output: list[Any]) -> list[Any]:
        return output

    def encode_response(self, output):  # type: ignore[no-untyped-def]
        return respond(*output)


if __name__ == "__main__":
    api = SentimentAPI(max_batch_size=32, batch_timeout=0.005)
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=1, timeout=60)
    server.run(host="127.0.0.1", port=port(), generate_client_file=False, log_level="warning")
