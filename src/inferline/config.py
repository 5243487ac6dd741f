"""Typed settings, read once from ``INFERLINE_*`` variables (and CLI flags), then frozen."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Tokens in a packed row, unless a text is longer: about two review texts (32 to 64 were
# slower on 2 cores; docs/architecture.md, "Packed rows").
PACK_WIDTH = 48


def default_model_dir() -> Path:
    return Path.home() / ".cache" / "inferline" / "models" / "all-MiniLM-L6-v2"


def describe(exc: ValidationError, tags: frozenset[str] = frozenset()) -> str:
    """A pydantic error on one line, each problem as ``field: message``, and no input
    values (they may be secrets). ``tags``: a tagged union's tags, which pydantic puts in
    the field's path after the key that holds the union (``models.embedding.oip.url``)."""
    problems = []
    for error in exc.errors(include_url=False, include_input=False):
        loc = error["loc"]
        parts = [str(p) for i, p in enumerate(loc) if not (i >= 2 and p in tags)]
        message = error["msg"]
        # a check across fields has no field to name: its message names them
        problems.append(
            f"{'.'.join(parts)}: {message}" if parts else message.removeprefix("Value error, ")
        )
    return "; ".join(problems)


# Settings one command reads and the other does not. Both accept every INFERLINE_* variable
# (one ConfigMap may feed both), but each lists only its own flags.
SERVE_ONLY = frozenset(
    {"port", "grpc_port", "tls_cert_file", "tls_key_file", "tls_client_ca_file"}
    | {"max_body_bytes", "max_header_bytes", "keep_alive_s", "request_timeout_s"}
    | {"api_keys", "api_keys_file", "api_keys_reload_s", "auth_open_paths"}
    | {"max_concurrent_per_key", "access_log", "access_log_refusals_per_s"}
)
WORKER_ONLY = frozenset(
    {"worker_name", "worker_metrics_port", "queue_max_deliveries", "queue_reclaim_idle_s"}
    | {"queue_read_count", "queue_prefetch", "queue_block_ms", "queue_result_ttl_s"}
    | {"queue_job_timeout_s"}
)


class Settings(BaseSettings):
    """Every knob of the service. Each field maps to ``INFERLINE_<FIELD>``."""

    model_config = SettingsConfigDict(
        env_prefix="INFERLINE_",
        frozen=True,
        extra="forbid",
        use_attribute_docstrings=True,
        hide_input_in_errors=True,  # values may be secrets (a Redis URL's password, keys)
    )

    host: str = "0.0.0.0"  # containers need all interfaces
    """Address the HTTP server binds."""
    port: int = Field(8000, ge=0, le=65535)
    """HTTP port (0 picks a free one)."""
    grpc_port: int = Field(8001, ge=0, le=65535)
    """gRPC port of the Open Inference Protocol (GRPCInferenceService; 0 picks a free one)."""
    tls_cert_file: Path | None = None
    """PEM certificate (with its chain) to serve HTTPS and gRPC over TLS; needs
    ``tls_key_file``. Unset: plain HTTP and gRPC, for a mesh or ingress that terminates TLS."""
    tls_key_file: Path | None = None
    """PEM private key of ``tls_cert_file``."""
    tls_client_ca_file: Path | None = None
    """PEM CA bundle: when set, every client must present a certificate it signed (mutual
    TLS), on both ports."""

    model_dir: Path = Field(default_factory=default_model_dir)
    """Directory written by ``inferline model build``: ONNX files, tokenizer, manifest."""
    models_config: Path | None = None
    """A TOML or YAML file that picks the engine of each model: local ONNX Runtime (the
    default), a remote Open Inference Protocol server (Triton, KServe), or an
    OpenAI-compatible API, and the chat models to relay; see docs/engines.md."""
    device: Literal["cpu", "cuda"] = "cpu"
    """Execution provider: ``cuda`` uses the CUDA provider when onnxruntime-gpu has it."""
    precision: Literal["auto", "int8", "fp32"] = "auto"
    """Weights to serve; ``auto`` is int8 on CPU and fp32 on CUDA."""
    lanes: int = Field(2, ge=1, le=64)
    """Batches that may run at once per model (parallel ONNX Runtime calls)."""
    intra_op_threads: int = Field(1, ge=0, le=256)
    """Threads inside one ONNX Runtime call (0 lets ONNX Runtime choose)."""
    lane_nice: int = Field(19, ge=0, le=19)
    """Niceness of the inference threads (Linux). The event loop keeps niceness 0, so that
    reading requests, refusing them and writing results never wait behind a batch; the
    lanes still get every cycle the loop leaves. 0 puts them on a par with it. With more than
    one intra-op thread, ONNX Runtime's own pool threads keep the loop's niceness."""

    max_batch_size: int = Field(16, ge=1, le=4096)
    """Most texts in one model call."""
    max_batch_tokens: int = Field(8192, ge=1)
    """Most padded tokens (texts x longest text) in one model call; at least the model's
    tokens per text (256), which a smaller value is raised to, with a warning."""
    max_padding_ratio: float = Field(1.05, ge=1.0)
    """A batch stops growing when its padded tokens would exceed this multiple of its real
    tokens (padding costs as much compute as real tokens)."""
    min_batch_size: int = Field(2, ge=1)
    """Texts a batch may take regardless of the padding rule (at most ``max_batch_size``:
    ``max_batch_size=1`` turns batching off whatever this is)."""
    pack_width: int = Field(PACK_WIDTH, ge=0, le=4096)
    """Tokens in a packed row: short texts share rows this wide (or as wide as the batch's
    longest text) instead of being padded, and the padding rule no longer applies. 0 pads
    each batch to its longest text instead. Local ONNX engine only."""
    pack_rows: int = Field(6, ge=1, le=4096)
    """Most packed rows in one model call (about 6 x 48 tokens is the fastest call size on
    a CPU core here; raise it with max_batch_size on a GPU)."""
    max_delay_ms: float = Field(2.0, ge=0, le=10_000)
    """How long the first queued text may wait for a batch to fill, while every lane is busy
    (with one idle, or after a quiet spell, a text runs at once)."""
    max_queue_items: int = Field(2048, ge=1)
    """Texts that may wait per model before new work is refused with 429."""
    max_queue_tokens: int = Field(262_144, ge=1)
    """Tokens that may wait per model before new work is refused with 429; at least the
    model's tokens per text (256), which a smaller value is raised to, with a warning."""

    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    """Largest request body; larger ones get 413."""
    max_texts_per_request: int = Field(256, ge=1)
    """Most texts in one request; more get 422."""
    max_text_chars: int = Field(20_000, ge=1)
    """Longest text in characters; longer ones get 422. Texts over the model's token limit
    are truncated (``/predict`` and ``/embed`` say so per text)."""
    max_header_bytes: int = Field(16_384, ge=1024)
    """Largest total size of a request's headers; larger ones get 431."""
    # allow_inf_nan=False here and below: an endless keep-alive, grace or lease is a mistake
    # (inf once crashed the server's set-up, and XAUTOCLAIM takes whole milliseconds)
    keep_alive_s: float = Field(5.0, gt=0, allow_inf_nan=False)
    """How long an idle keep-alive connection stays open."""
    max_connections: int = Field(2048, ge=1)
    """Connections (and requests) served at once; the server answers 503 past it."""
    request_timeout_s: float = Field(30.0, gt=0)
    """Default deadline of a request; texts not answered when it passes get 504."""

    shutdown_grace_s: float = Field(25.0, ge=0, allow_inf_nan=False)
    """On SIGTERM, how long accepted requests may take to finish before the process exits."""

    api_keys: str = ""
    """Comma-separated API keys; when any key is set (here or in the file), every request
    outside ``auth_open_paths`` needs ``Authorization: Bearer <key>`` or ``X-API-Key``."""
    api_keys_file: Path | None = None
    """A file with one API key per line (a mounted Secret). Re-read when it changes, so a
    rotated Secret takes effect without a restart; an empty file keeps the previous keys."""
    api_keys_reload_s: float = Field(5.0, gt=0)
    """How often, at most, the keys file is checked for a change."""
    auth_open_paths: str = "/health,/v2/health,/metrics,/docs,/openapi.json"
    """Comma-separated path prefixes served without a key (probes, scrapes, docs)."""
    max_concurrent_per_key: int = Field(0, ge=0)
    """Requests one API key may have in flight at once (0: no limit); more get 429."""
    max_request_tokens: int = Field(65_536, ge=1)
    """Most tokens (after truncation) in one request; more get 422."""

    redis_url: str | None = None
    """Redis for the job queue (``redis://[:password@]host:port/db``; ``rediss://`` for TLS).
    Unset: ``/v1/jobs`` answers 503 and everything else works as before."""
    queue_prefix: str = "inferline"
    """Prefix of every Redis key of the queue: ``<prefix>:jobs`` (the stream),
    ``<prefix>:workers`` (the consumer group), ``<prefix>:dead`` (the dead-letter stream),
    ``<prefix>:job:<id>`` and ``<prefix>:result:<id>``."""
    queue_max_len: int = Field(100_000, ge=1)
    """Entries the job stream may hold (waiting, plus delivered and not acknowledged) before
    new jobs are refused with 429."""
    queue_max_deliveries: int = Field(3, ge=1)
    """Deliveries after which a job that keeps failing goes to the dead-letter stream."""
    queue_reclaim_idle_s: float = Field(30.0, gt=0, allow_inf_nan=False)
    """A delivered job not acknowledged for this long is taken over by another worker
    (XAUTOCLAIM); a worker keeps its own slow jobs' leases alive meanwhile."""
    queue_read_count: int = Field(64, ge=1, le=10_000)
    """Most jobs a worker reads at once (and runs together through the batcher)."""
    queue_prefetch: int = Field(512, ge=1, le=100_000)
    """Most jobs a worker holds at once (read and not yet written), in reads of
    ``queue_read_count``. A deeper hand gives the batcher more texts to group by length, so
    less padding; a shallower one spreads a small backlog over more workers."""
    queue_block_ms: int = Field(1000, ge=1, le=60_000)
    """How long one XREADGROUP blocks waiting for jobs; bounds how soon a worker sees SIGTERM
    while idle."""
    queue_result_ttl_s: int = Field(86_400, ge=1)
    """How long a job's result (and its idempotency key) is kept after it finished."""
    queue_job_timeout_s: float = Field(300.0, gt=0)
    """Deadline of one job in the worker's batcher; past it the job is retried."""
    worker_name: str = ""
    """Consumer name of this worker in the group (default: host name and process id)."""

    log_level: Literal["debug", "info", "warning", "error"] = "info"
    """Log level of the service (JSON lines on stderr)."""
    access_log: bool = True
    """One JSON line per API request: protocol, model, status, texts, tokens, queue wait and
    inference time (logger ``inferline.access``)."""
    access_log_refusals_per_s: int = Field(20, ge=0)
    """At most this many access lines a second for 429 refusals; the others are counted,
    and one line a second (``"message": "refusals"``) gives their number by protocol, model
    and path. Under overload refusals come by the thousand a second. 0 writes only the
    counts; the metrics count every refusal whatever this is."""
    log_texts: bool = False
    """Put the request texts in the access log. Off by default: reviews may hold personal
    data."""
    worker_metrics_port: int = Field(9100, ge=0, le=65535)
    """Port of the worker's ``/metrics`` (Prometheus) and ``/health/live`` and
    ``/health/ready`` (its probes); 0 turns them off."""

    @field_validator(
        "tls_cert_file",
        "tls_key_file",
        "tls_client_ca_file",
        "models_config",
        "api_keys_file",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        """``value: ""`` in a chart or a compose file means unset, not the folder ``.``."""
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("api_keys")
    @classmethod
    def _some_key(cls, value: str) -> str:
        """A value that holds no key (",", a space) would leave the API open unnoticed."""
        if value and not value.replace(",", "").strip():
            raise ValueError("holds no key: set keys, or leave it empty to serve without keys")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.port and self.port == self.grpc_port:
            raise ValueError(f"port and grpc_port are both {self.port}: give each its own")
        return self

    @model_validator(mode="after")
    def _tls_files_together(self) -> Settings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file go together: set both or neither")
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            raise ValueError("tls_client_ca_file needs tls_cert_file and tls_key_file")
        return self

    @field_validator("log_level", mode="before")
    @classmethod
    def _log_level(cls, value: object) -> object:
        """WARNING as well as warning, as Python's own level names are written."""
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        """Checked at start-up, so that a typo is not a 500 on the first job. The message
        never holds the URL: it may carry a password."""
        if value:
            from redis.connection import parse_url

            try:
                parse_url(value)  # type: ignore[no-untyped-call]
            except ValueError as exc:
                raise ValueError(
                    f"not a Redis URL (redis://, rediss:// or unix://): {exc}"
                ) from None
        return value

    @property
    def tls(self) -> bool:
        return self.tls_cert_file is not None
