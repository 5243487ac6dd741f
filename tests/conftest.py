"""Fixtures shared by the integration and end-to-end tests: real servers on free ports."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from inferline.config import Settings
from inferline.telemetry import tracing

_GIVEN: set[int] = set()


def free_port() -> int:
    """A port free now, and not handed out before in this session: two calls in a row (a
    server's HTTP and gRPC ports) could otherwise get the same one, since neither is bound
    until the server starts."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _GIVEN:
            _GIVEN.add(port)
            return port


def model_dir() -> Path:
    path = Settings().model_dir
    if not (path / "manifest.json").is_file():
        pytest.fail(f"no model at {path}: run `inferline model build` first (scripts/test.sh does)")
    return path


class Logged:
    """A process whose output goes to ``log``."""

    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for_output(self, text: str, seconds: float = 10) -> str:
        """The log once it holds ``text`` (a line may reach the file a moment after the
        answer that follows it reaches the client); the log as it is after ``seconds``."""
        deadline = time.monotonic() + seconds
        while text not in (output := self.output()) and time.monotonic() < deadline:
            time.sleep(0.05)
        return output


@dataclass
class Server(Logged):
    proc: subprocess.Popen[bytes]
    url: str
    log: Path
    grpc_port: int

    @property
    def grpc_target(self) -> str:
        """``host:port`` of the gRPC (Open Inference Protocol) server."""
        return f"127.0.0.1:{self.grpc_port}"

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)


def start_server(
    tmp: Path,
    env: dict[str, str] | None = None,
    wait_ready: bool = True,
    verify: httpx.Client | None = None,
) -> Server:
    """``verify``, for a server with TLS: a client that trusts its CA (and the URL is
    https)."""
    env = env or {}
    # A test that restarts a server at the same address gives its ports.
    port = int(env.get("INFERLINE_PORT") or free_port())
    grpc_port = int(env.get("INFERLINE_GRPC_PORT") or free_port())
    log = tmp / f"server-{port}-{time.monotonic_ns()}.log"
    full_env = {
        **os.environ,
        "INFERLINE_MODEL_DIR": str(model_dir()),
        "INFERLINE_HOST": "127.0.0.1",
        "INFERLINE_PORT": str(port),
        "INFERLINE_GRPC_PORT": str(grpc_port),
        **env,
    }
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "inferline.cli", "serve"],
            env=full_env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    scheme = "https" if verify is not None else "http"
    server = Server(proc, f"{scheme}://127.0.0.1:{port}", log, grpc_port)
    deadline = time.monotonic() + 60
    path = "/health/ready" if wait_ready else "/health/live"
    get = verify.get if verify is not None else httpx.get
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{server.output()}")
        try:
            if get(server.url + path, timeout=1).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    server.stop(signal.SIGKILL)
    raise RuntimeError(f"server did not become ready:\n{server.output()}")


ServerFactory = Callable[..., Server]


_STARTED: list[Server] = []  # by server_factory, in order


@pytest.fixture(scope="session")
def server_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerFactory]:
    tmp = tmp_path_factory.mktemp("servers")

    def factory(
        env: dict[str, str] | None = None,
        wait_ready: bool = True,
        verify: httpx.Client | None = None,
    ) -> Server:
        server = start_server(tmp, env, wait_ready, verify)
        _STARTED.append(server)
        return server

    yield factory
    _kill(_STARTED)


@pytest.fixture(autouse=True)
def _stop_a_tests_own_servers() -> Iterator[None]:
    """The servers a test starts itself stop when it ends. Those of session and module
    fixtures (which pytest sets up before any function fixture) live on; kept all to the
    session's end, the servers of single tests held up to 20 GB of this 24 GB machine, and
    a clean-clone run once thrashed on it."""
    first = len(_STARTED)
    yield
    _kill(_STARTED[first:])


def _kill(servers: list[Server]) -> None:
    for server in servers:
        if server.proc.poll() is None:
            server.stop(signal.SIGKILL)


# Small limits so that every limit can be hit cheaply.
LIMITS = {
    "INFERLINE_MAX_TEXTS_PER_REQUEST": "8",
    "INFERLINE_MAX_TEXT_CHARS": "2000",
    "INFERLINE_MAX_BODY_BYTES": "65536",
}


@pytest.fixture(scope="session")
def server(server_factory: ServerFactory) -> Server:
    return server_factory(LIMITS)


@pytest.fixture
def client(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


@pytest.fixture(scope="session")
def busy_server(server_factory: ServerFactory) -> Server:
    """One lane and a queue of 64 texts, which tests/integration/saturation.py holds full:
    a queue that refuses requests that would fit it empty (429, not 422)."""
    from tests.integration.saturation import SETTINGS  # it imports this module

    return server_factory(SETTINGS)


@pytest.fixture(scope="session")
def failed_server(
    server_factory: ServerFactory, tmp_path_factory: pytest.TempPathFactory
) -> Server:
    """A server whose model directory has a manifest but no model files: it stays alive and
    never becomes ready, so every inference gets 503."""
    broken = tmp_path_factory.mktemp("broken-model")
    shutil.copy(model_dir() / "manifest.json", broken / "manifest.json")
    return server_factory({"INFERLINE_MODEL_DIR": str(broken)}, wait_ready=False)


# -- Redis and queue workers ------------------------------------------------------------------


@dataclass
class RedisServer:
    """A real ``redis-server`` on a free port, with no persistence unless asked."""

    port: int
    dir: Path
    args: tuple[str, ...]
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail(
                "redis-server is not installed: `apt-get install -y redis-server` "
                "(scripts/test.sh installs it)"
            )
        log = (self.dir / f"redis-{self.port}.log").open("ab")
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.dir),
                *self.args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(10)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(
        free_port(), tmp_path_factory.mktemp("redis"), ("--save", "", "--appendonly", "no")
    )
    server.start()
    yield server
    server.stop()


@dataclass
class WorkerProcess(Logged):
    proc: subprocess.Popen[bytes]
    log: Path
    metrics_port: int

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)


def start_worker(tmp: Path, env: dict[str, str]) -> WorkerProcess:
    """``inferline worker`` in its own process; returns once it reads the stream."""
    log = tmp / f"worker-{len(list(tmp.glob('worker-*.log')))}.log"
    env = {"INFERLINE_WORKER_METRICS_PORT": str(free_port()), **env}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "inferline.cli", "worker"],
            env={**os.environ, "INFERLINE_MODEL_DIR": str(model_dir()), **env},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    worker = WorkerProcess(proc, log, int(env["INFERLINE_WORKER_METRICS_PORT"]))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if "reading" in worker.output():
            return worker
        if proc.poll() is not None:
            raise RuntimeError(f"worker exited with {proc.returncode}:\n{worker.output()}")
        time.sleep(0.05)
    worker.stop(signal.SIGKILL)
    raise RuntimeError(f"worker did not start:\n{worker.output()}")


WorkerFactory = Callable[[dict[str, str]], WorkerProcess]


@pytest.fixture
def worker_factory(tmp_path: Path) -> Iterator[WorkerFactory]:
    workers: list[WorkerProcess] = []

    def factory(env: dict[str, str]) -> WorkerProcess:
        worker = start_worker(tmp_path, env)
        workers.append(worker)
        return worker

    yield factory
    for worker in workers:
        if worker.proc.poll() is None:
            worker.stop(signal.SIGKILL)


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    """Tracing on, into memory, for one test."""
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracing.install(provider)
    yield memory
    tracing.install(None)
