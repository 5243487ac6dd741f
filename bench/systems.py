"""The systems that bench.compare runs side by side: the peers' definitions, their virtual
environments, and starting and stopping any system (inferline or a peer) on free ports."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.common import ROOT, descendants
from bench.progress import Progress
from inferline.config import Settings

PEERS_DIR = ROOT / "bench" / "peers"
VENVS = ROOT / "bench" / ".venvs"
RESULTS = ROOT / "bench" / "results"
# What every peer's environment has besides its framework: the versions inferline runs.
COMMON = ("onnxruntime==1.32.0", "tokenizers==0.23.3", "numpy==2.4.6")


@dataclass(frozen=True)
class Peer:
    name: str  # CLI name and venv folder
    label: str
    requirements: tuple[str, ...]
    command: Callable[[Path, int], list[str]]  # (venv, port) -> argv, run in bench/peers
    list_body: bool = False  # takes {"texts": [...]} only (BentoML's batchable API)


PEERS = [
    Peer(
        "seed",
        "seed design (FastAPI, no batching)",
        ("fastapi==0.165.0", "uvicorn[standard]==0.54.0", *COMMON),
        lambda venv, port: [str(venv / "bin" / "python"), "seed_app.py"],
    ),
    Peer(
        "litserve",
        "LitServe 0.2.19",
        ("litserve==0.2.19", *COMMON),
        lambda venv, port: [str(venv / "bin" / "python"), "litserve_app.py"],
    ),
    Peer(
        "mlserver",
        "MLServer 1.7.1",
        ("mlserver==1.7.1", *COMMON),
        lambda venv, port: [str(venv / "bin" / "mlserver"), "start", "mlserver_repo"],
    ),
    Peer(
        "rayserve",
        "Ray Serve 2.60.0",
        ("ray[serve]==2.60.0", *COMMON),
        lambda venv, port: [str(venv / "bin" / "python"), "rayserve_app.py"],
    ),
    Peer(
        "bentoml",
        "BentoML 1.4.40",
        ("bentoml==1.4.40", *COMMON),
        lambda venv, port: [
            str(venv / "bin" / "bentoml"),
            "serve",
            "bentoml_service:Sentiment",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        list_body=True,
    ),
]
PEER_NAMES = [p.name for p in PEERS]


# -- peers' environments ----------------------------------------------------------------------


def ensure_venv(peer: Peer, skip_install: bool, progress: Progress) -> str | None:
    """Create or update bench/.venvs/<peer>; return why it cannot be used, or None."""
    venv = VENVS / peer.name
    stamp = venv / ".bench-requirements"
    wanted = "\n".join(peer.requirements) + "\n"
    if skip_install:
        return None if (venv / "bin" / "python").exists() else "no venv and --skip-install"
    if stamp.exists() and stamp.read_text() == wanted:
        return None
    log = RESULTS / "logs" / f"install-{peer.name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    progress.say(f"installing {peer.label} into {venv.relative_to(ROOT)} (log: {log})")
    with log.open("w") as out, progress.step(f"pip install {peer.name}"):
        steps = [
            [sys.executable, "-m", "venv", str(venv)],
            [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "-U", "pip"],
            [str(venv / "bin" / "python"), "-m", "pip", "install", *peer.requirements],
        ]
        for command in steps:
            if subprocess.run(
                command, check=False, stdout=out, stderr=subprocess.STDOUT
            ).returncode:
                return f"install failed ({' '.join(command[-3:])}); see {log}"
    stamp.write_text(wanted)
    return None


# -- starting and stopping --------------------------------------------------------------------


@dataclass
class Running:
    proc: subprocess.Popen[bytes]
    url: str
    cold_start_s: float


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch(name: str, peer: Peer | None, log: Path) -> Running:
    """Start a system on free ports; return once /predict answers 200."""
    port = free_port()
    env = {**os.environ, "PEER_PORT": str(port), "PEER_MODEL_DIR": str(Settings().model_dir)}
    if peer is None:
        command = [sys.executable, "-m", "inferline.cli", "serve"]
        cwd = ROOT
        env |= {
            "INFERLINE_HOST": "127.0.0.1",
            "INFERLINE_PORT": str(port),
            "INFERLINE_GRPC_PORT": str(free_port()),
        }
    else:
        command = peer.command(VENVS / peer.name, port)
        cwd = PEERS_DIR
        env |= {
            "PYTHONPATH": str(PEERS_DIR),
            "VIRTUAL_ENV": str(VENVS / peer.name),
            "PATH": f"{VENVS / peer.name / 'bin'}:{os.environ.get('PATH', '')}",
            "MLSERVER_HOST": "127.0.0.1",
            "MLSERVER_HTTP_PORT": str(port),
            "MLSERVER_GRPC_PORT": str(free_port()),
            "MLSERVER_METRICS_PORT": str(free_port()),
            "BENTOML_DO_NOT_TRACK": "True",
            "RAY_USAGE_STATS_ENABLED": "0",
        }
    body = {"texts": ["warm up"]} if peer is not None and peer.list_body else {"text": "warm up"}
    url = f"http://127.0.0.1:{port}"
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with log.open("ab") as out:
        proc = subprocess.Popen(
            command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    running = Running(proc, url, 0.0)
    while True:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.post(url + "/predict", json=body, timeout=5).status_code == 200:
                running.cold_start_s = time.monotonic() - started
                return running
        if proc.poll() is not None or time.monotonic() - started > 180:
            stop(running)
            tail = log.read_text(errors="replace").splitlines()[-5:]
            raise RuntimeError(f"{name} did not start: " + " / ".join(tail))
        time.sleep(0.05)


def stop(running: Running) -> None:
    """SIGTERM the system's process tree, then SIGKILL whatever is left of it."""
    tree = descendants(running.proc.pid)
    for pid in tree:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        running.proc.wait(20)
    for pid in tree:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        running.proc.wait(5)
