"""The models config (``INFERLINE_MODELS_CONFIG``): which engine serves each model.

A TOML or YAML file with one table per model under ``models``; a model that is not in it
runs locally on ONNX Runtime, as it does without the file::

    [models.sentiment]
    engine = "onnx"

    [models.embedding]                  # forwarded to an Open Inference Protocol server
    engine = "oip"
    url = "http://backend:8000"         # gRPC: "backend:8001" with protocol = "grpc"
    remote_model = "embedding"

    [models."llama-3.1-8b"]             # any other name: an OpenAI chat/completions relay
    engine = "openai"
    url = "http://vllm:8000/v1"
    api_key_env = "VLLM_API_KEY"

docs/engines.md documents every field. The file is read once, at start; a mistake in it
stops the server before it binds, with the field named.
"""

from __future__ import annotations

import os
import re
import ssl
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from inferline.config import describe

LOCAL_MODELS = ("sentiment", "embedding")  # the batched models; every other name is chat


class _Spec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class OnnxSpec(_Spec):
    """In process, on ONNX Runtime: the default."""

    engine: Literal["onnx"] = "onnx"


class RemoteSpec(_Spec):
    """What every remote engine shares: where, how long, how often, and the key."""

    url: str = Field(min_length=1)
    remote_model: str | None = None  # default: the local name
    timeout_s: float = Field(30.0, gt=0)
    connect_timeout_s: float = Field(2.0, gt=0)
    max_retries: int = Field(3, ge=0, le=20)
    backoff_s: float = Field(0.05, ge=0)  # first backoff; doubles, jittered, up to the cap
    max_backoff_s: float = Field(2.0, ge=0)
    concurrency: int = Field(8, ge=1, le=1024)  # batches in flight upstream
    max_connections: int = Field(64, ge=1)
    http2: bool = False  # HTTP: one multiplexed connection (needs the h2 package)
    health_interval_s: float = Field(5.0, gt=0)
    failure_threshold: int = Field(3, ge=1)  # consecutive failures that open the breaker
    api_key_env: str | None = None
    api_key_file: Path | None = None
    headers: dict[str, str] = Field(default_factory=dict)  # e.g. Host, for KServe routing
    # https:// and grpcs:// upstreams: trust this CA (PEM) instead of the public ones, and
    # present a client certificate to an upstream that asks for one (mutual TLS).
    tls_ca_file: Path | None = None
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None

    @field_validator("url")
    @classmethod
    def _scheme_in_lower_case(cls, url: str) -> str:
        """Schemes are case-insensitive (RFC 3986), but the transports test for ``https:``
        and ``grpcs://``: ``HTTPS://`` would go in clear text, with the API key."""
        scheme, sep, rest = url.partition("://")
        return f"{scheme.lower()}{sep}{rest}" if sep else url

    @model_validator(mode="after")
    def _client_certificate_and_key(self) -> RemoteSpec:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file go together: set both or neither")
        return self

    def mistake(self) -> tuple[str, str] | None:
        """(field, why) for a ``url`` or ``headers`` that cannot work, which ``load`` reports
        before the server binds (else the model would fail to load, or stay down forever);
        None when both can. The reason quotes no value: either may hold a secret."""
        if self.url != self.url.strip() or _CONTROL.search(self.url):
            return "url", "the URL has spaces or control characters"
        why = self._url_mistake()
        if why is not None:
            return "url", why
        for name, value in self.headers.items():
            why = _header_mistake(name, value, self._header_text())
            if why is not None:
                return "headers", why
        return None

    def _url_mistake(self) -> str | None:
        return _http_url(self.url, "a remote engine", "http://backend:8000")

    def _header_text(self) -> HeaderText:
        """What the client sends header values as: httpx, ASCII alone."""
        return "ascii"

    def tls_files(self) -> tuple[bytes | None, bytes | None, bytes | None]:
        """(CA, certificate, key), read now, each None when unset."""
        found: list[bytes | None] = []
        for field in ("tls_ca_file", "tls_cert_file", "tls_key_file"):
            path: Path | None = getattr(self, field)
            try:
                found.append(path.read_bytes() if path is not None else None)
            except OSError as exc:
                raise ValueError(f"cannot read {field} {path}: {exc}") from None
        ca, cert, key = found
        return ca, cert, key

    def ssl_context(self) -> ssl.SSLContext | None:
        """For httpx; None when no TLS field is set (httpx's own defaults then)."""
        if self.tls_ca_file is None and self.tls_cert_file is None:
            return None
        import certifi  # httpx's trust store, when only a client certificate is set

        try:
            context = ssl.create_default_context(cafile=self.tls_ca_file or certifi.where())
            if self.tls_cert_file is not None and self.tls_key_file is not None:
                context.load_cert_chain(self.tls_cert_file, self.tls_key_file)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"cannot use the TLS files of {display(self.url)}: {exc}") from None
        return context

    def api_key(self) -> SecretStr | None:
        """The key, read now: the file's first line, or else the variable's value."""
        if self.api_key_file is not None:
            try:
                lines = self.api_key_file.read_text(encoding="utf-8").splitlines()
            except OSError as exc:
                raise ValueError(f"cannot read api_key_file {self.api_key_file}: {exc}") from None
            key = lines[0].strip() if lines else ""
            if not key:
                raise ValueError(f"api_key_file {self.api_key_file} is empty")
            return _header_safe(key, f"api_key_file {self.api_key_file}")
        if self.api_key_env is not None:
            value = os.environ.get(self.api_key_env, "").strip()
            if not value:
                raise ValueError(f"api_key_env names {self.api_key_env}, which is not set")
            return _header_safe(value, f"api_key_env {self.api_key_env}")
        return None

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        # Specs show up in logs and errors; credentials in the URL or a header must not.
        for name, value in super().__repr_args__():
            if name == "url":
                yield name, display(value)
            elif name == "headers":
                yield name, dict.fromkeys(value, "**********")
            else:
                yield name, value


HeaderText = Literal["latin-1", "ascii", "grpc"]  # what a client sends header values as
# h11's field-content (httpx sends through it): printable ASCII words, spaces between
_H11_VALUE = re.compile(r"(?:[\x21-\x7e]+(?:[ \t]+[\x21-\x7e]+)*)?")
_CONTROL = re.compile(r"[\x00-\x20\x7f]")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # a header name (RFC 9110, 5.1)
_METADATA_KEY = re.compile(r"[0-9a-z_.-]+")  # gRPC's, lower-cased
# gRPC's own target names (grpc/doc/naming.md), passed on as they are.
_GRPC_NAMES = re.compile(r"(dns|unix|unix-abstract|ipv4|ipv6|vsock):(?!\d+$)")


def _authority(url: str, netloc_only: bool) -> str | None:
    """Why the host and port of ``url`` (``//host:port...``) cannot work; None if they can."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:  # a port out of range or not a number, a broken IPv6 address
        return "the URL has no valid host and port (a port is a number from 1 to 65535)"
    if not parts.hostname:
        return "the URL has no host"
    if port == 0:
        return "the URL has port 0 (a port is a number from 1 to 65535)"
    if parts.query or parts.fragment or (netloc_only and parts.path):
        return "the URL has a query, a fragment or (gRPC) a path, which it cannot have here"
    return None


def _http_url(url: str, who: str, example: str) -> str | None:
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    if scheme not in ("http", "https"):
        return f"{who} needs an http:// or https:// URL, e.g. {example}"
    return _authority(url, netloc_only=False)


def _grpc_target(url: str) -> str | None:
    scheme, sep, rest = url.partition("://")
    if _GRPC_NAMES.match(url):
        return None
    if sep and scheme.lower() not in ("grpc", "grpcs"):
        return "OIP over gRPC takes host:port, grpc://host:port or grpcs://host:port (TLS)"
    return _authority("//" + (rest if sep else url), netloc_only=True)


def _header_mistake(name: str, value: str, text: HeaderText) -> str | None:
    if not _TOKEN.fullmatch(name):  # not quoted: a mistaken name may hold a value
        return "a name that is not a header name (letters, digits and !#$%&'*+-.^_`|~)"
    if text == "grpc" and not _METADATA_KEY.fullmatch(name.lower()):
        return f"{name} is not a gRPC metadata key (letters, digits, '-', '_' and '.')"
    return _value_mistake(name, value, text)


def _value_mistake(name: str, value: str, text: HeaderText) -> str | None:
    if re.search(r"[\x00-\x08\x0a-\x1f\x7f]", value):
        return f"the value of {name} has a line break or a control character"
    if text == "grpc" and not (value.isascii() and value.isprintable()):
        return f"the value of {name} is not printable ASCII, as gRPC metadata must be"
    if text == "ascii" and not _H11_VALUE.fullmatch(value):
        return (
            f"the value of {name} is not ASCII or has spaces at an end, which httpx "
            "(OpenAI, http2 = true) refuses"
        )
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        return f"the value of {name} is not Latin-1 text, as an HTTP header must be"
    return None


def _header_safe(key: str, source: str) -> SecretStr:
    """The key, if ``Authorization: Bearer <key>`` can carry it: else every request would
    fail, and a client library's error might quote the header."""
    if not _H11_VALUE.fullmatch(key):
        raise ValueError(f"{source}: the key has characters a header cannot carry")
    return SecretStr(key)


def display(url: str) -> str:
    """``url`` without any credentials in it, for logs and errors."""
    parts = urlsplit(url if "://" in url else f"//{url}")
    host = parts.hostname or url
    port = f":{parts.port}" if parts.port else ""
    scheme = f"{parts.scheme}://" if parts.scheme else ""
    return f"{scheme}{host}{port}{parts.path}"


class OipSpec(RemoteSpec):
    """A remote Open Inference Protocol v2 server: Triton, KServe, MLServer, inferline."""

    engine: Literal["oip"]
    protocol: Literal["http", "grpc"] = "http"
    remote_version: str = ""
    input: str = "text"  # the name of the upstream model's BYTES input
    output: str | None = None  # default: probabilities (sentiment), embedding (embedding)
    binary_data: bool = True  # ask for binary outputs (Triton's extension); JSON otherwise

    def _url_mistake(self) -> str | None:
        if self.protocol == "grpc":
            return _grpc_target(self.url)
        return _http_url(self.url, 'OIP over HTTP (gRPC: protocol = "grpc")', "http://backend:8000")

    def _header_text(self) -> HeaderText:
        if self.protocol == "grpc":
            return "grpc"
        return "ascii" if self.http2 else "latin-1"  # httpx, or engines/http1.py


class OpenAISpec(RemoteSpec):
    """An OpenAI-compatible API: OpenAI, vLLM, Ollama, TGI, LiteLLM. ``url`` ends in /v1."""

    engine: Literal["openai"]
    health_path: str = "/models"
    encoding_format: Literal["float", "base64"] = "float"
    output_dim: int | None = Field(None, ge=1)  # embedding: the remote model's width

    def _url_mistake(self) -> str | None:
        return _http_url(self.url, "an OpenAI engine", "http://vllm:8000/v1")


Spec = Annotated[OnnxSpec | OipSpec | OpenAISpec, Field(discriminator="engine")]
ENGINES = frozenset({"onnx", "oip", "openai"})


class ModelsConfig(_Spec):
    models: dict[str, Spec] = Field(default_factory=dict)

    def spec(self, name: str) -> OnnxSpec | OipSpec | OpenAISpec:
        return self.models.get(name) or OnnxSpec()

    def chat_models(self) -> dict[str, OpenAISpec]:
        """The chat/completions relays (``load`` checked that each is an OpenAI engine)."""
        return {
            name: spec
            for name, spec in self.models.items()
            if name not in LOCAL_MODELS and isinstance(spec, OpenAISpec)
        }


def load(path: Path | None) -> ModelsConfig:
    """The config at ``path`` (TOML, or YAML by its suffix); empty when ``path`` is None.

    Raises ValueError naming the file and the field."""
    if path is None:
        return ModelsConfig()
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read the models config {path}: {exc}") from None
    data: Any
    yaml_file = path.suffix in (".yaml", ".yml")
    if yaml_file:
        try:
            import yaml
        except ImportError:
            raise ValueError(
                f"the models config {path} is YAML: install inferline[remote] (PyYAML), "
                "or write it in TOML"
            ) from None
    try:
        data = yaml.safe_load(raw) if yaml_file else tomllib.loads(raw.decode("utf-8"))
    except Exception as exc:  # tomllib, yaml and UnicodeDecodeError each have their own
        raise ValueError(f"the models config {path} does not parse: {exc}") from None
    try:
        config = ModelsConfig.model_validate(data or {})
    except ValidationError as exc:
        why = describe(exc, ENGINES)
        raise ValueError(f"the models config {path} is invalid: {why}") from None
    for name, spec in config.models.items():
        if name == "sentiment" and isinstance(spec, OpenAISpec):
            raise ValueError(f"{path}: sentiment needs engine onnx or oip (OpenAI has no head)")
        if name not in LOCAL_MODELS and not isinstance(spec, OpenAISpec):
            raise ValueError(
                f"{path}: model {name!r} is not sentiment or embedding, so it is a chat model, "
                "and needs engine = 'openai'"
            )
        if isinstance(spec, RemoteSpec):
            _check_remote(path, name, spec)
    return config


def _check_remote(path: Path, name: str, spec: RemoteSpec) -> None:
    """What pydantic cannot check: the url and headers for the engine and protocol, and the
    files and variables that the spec names, read now; each error names the model."""
    mistake = spec.mistake()
    if mistake is not None:
        field, why = mistake
        raise ValueError(f"the models config {path} is invalid: models.{name}.{field}: {why}")
    try:
        spec.api_key()  # a key that cannot be read stops the start, naming its source
        spec.tls_files()  # and so do TLS files that cannot be read,
        spec.ssl_context()  # or used (a key that does not match its certificate)
    except ValueError as exc:
        raise ValueError(f"{path}: models.{name}: {exc}") from None
