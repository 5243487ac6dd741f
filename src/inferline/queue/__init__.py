"""The job queue on Redis Streams: key names, the producer and the worker."""
