"""inferline: high-throughput asynchronous inference for sentiment and embeddings."""

__version__ = "0.1.0"
