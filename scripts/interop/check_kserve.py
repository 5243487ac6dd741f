"""Interoperability with KServe, both ways, with KServe's own code:

1. KServe's clients (REST, JSON and binary tensors; gRPC) against ``inferline serve``: the
   labels must equal /predict's.
2. inferline as a gateway in front of KServe's ModelServer (OipEngine over REST, then over
   gRPC): /embed must equal what the KServe server answers itself.

KServe goes into its own virtual environment, bench/.venvs/kserve (about 450 MB; its
protobuf package ``inference`` clashes with tritonclient's, so it cannot share the test
environment). Run from the repository root after ``make setup``:

    .venv/bin/python scripts/interop/check_kserve.py
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
VENV = ROOT / "bench" / ".venvs" / "kserve"
REQUIREMENT = "kserve==0.21.0"
TEXTS = ["Great screen, love it.", "Terrible, it broke in a day.", "Grüße aus Köln ☕"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ensure_venv() -> Path:
    python = VENV / "bin" / "python"
    stamp = VENV / ".requirement"
    if not python.exists() or not stamp.exists() or stamp.read_text() != REQUIREMENT:
        print(f"installing {REQUIREMENT} into {VENV.relative_to(ROOT)}", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        pip = [str(python), "-m", "pip", "install", "--quiet"]
        subprocess.run([*pip, "-U", "pip"], check=True)
        subprocess.run([*pip, REQUIREMENT], check=True)
        stamp.write_text(REQUIREMENT)
    return python


def wait_for(url: str, what: str, proc: subprocess.Popen[bytes], seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"{what} exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    sys.exit(f"{what} did not become ready at {url}")


def serve(env: dict[str, str], log: Path) -> tuple[subprocess.Popen[bytes], str, str]:
    http, grpc = free_port(), free_port()
    env = {"INFERLINE_HOST": "127.0.0.1", "INFERLINE_PORT": str(http)} | env
    env |= {"INFERLINE_GRPC_PORT": str(grpc)}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "inferline.cli", "serve"],
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{http}"
    wait_for(url + "/health/ready", "inferline", proc)
    return proc, url, f"127.0.0.1:{grpc}"


def check(condition: bool, what: str) -> None:
    print(("ok    " if condition else "FAIL  ") + what, flush=True)
    if not condition:
        raise SystemExit(1)


def clients(python: Path, tmp: Path) -> None:
    proc, url, target = serve({}, tmp / "inferline.log")
    try:
        run = subprocess.run(
            [str(python), str(HERE / "kserve_client.py"), url, target, *TEXTS],
            capture_output=True,
            text=True,
            check=False,
        )
        if run.returncode != 0:
            sys.exit(f"the KServe client failed:\n{run.stderr[-3000:]}")
        out = run.stdout
        found = json.loads(out.strip().splitlines()[-1])
        expected = [
            r["label"]
            for r in httpx.post(url + "/predict", json={"texts": TEXTS}).json()["results"]
        ]
        check(
            found["live"] and found["ready"] and found["model_ready"], "KServe REST client: health"
        )
        for key in ("rest_json", "rest_binary", "grpc"):
            answer = found[key]
            check(
                answer["labels"] == expected and answer["id"] == "kserve-1",
                f"KServe client, {key}: labels and id",
            )
        check(found["embedding_shape"] == [len(TEXTS), 384], "KServe REST client: embedding shape")
    finally:
        proc.terminate()
        proc.wait(30)


def gateway(python: Path, tmp: Path) -> None:
    http, grpc = free_port(), free_port()
    with (tmp / "kserve.log").open("wb") as out:
        kserve = subprocess.Popen(
            [str(python), str(HERE / "kserve_model.py"), str(http), str(grpc)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(f"http://127.0.0.1:{http}/v2/models/embedding/ready", "KServe", kserve)
        tensor = {"name": "text", "datatype": "BYTES", "shape": [len(TEXTS)], "data": TEXTS}
        direct = httpx.post(
            f"http://127.0.0.1:{http}/v2/models/embedding/infer",
            json={"id": "direct", "inputs": [tensor]},
        ).json()["outputs"][0]
        expected = np.asarray(direct["data"], dtype=np.float32).reshape(direct["shape"])
        for protocol, url in (("http", f"http://127.0.0.1:{http}"), ("grpc", f"127.0.0.1:{grpc}")):
            config = tmp / f"models-{protocol}.toml"
            config.write_text(
                f'[models.embedding]\nengine = "oip"\nurl = "{url}"\nprotocol = "{protocol}"\n'
            )
            env = {"INFERLINE_MODELS_CONFIG": str(config)}
            proc, base, _ = serve(env, tmp / f"gateway-{protocol}.log")
            try:
                got = httpx.post(base + "/embed", json={"texts": TEXTS}).json()["embeddings"]
                same = np.allclose(np.asarray(got, dtype=np.float32), expected, atol=1e-6)
                check(same, f"inferline gateway -> KServe ModelServer over {protocol}: /embed")
            finally:
                proc.terminate()
                proc.wait(30)
    finally:
        kserve.terminate()
        kserve.wait(30)


def main() -> None:
    python = ensure_venv()
    with tempfile.TemporaryDirectory(prefix="inferline-kserve-") as name:
        tmp = Path(name)
        try:
            clients(python, tmp)
            gateway(python, tmp)
        except BaseException:
            for log in sorted(tmp.glob("*.log")):
                print(f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}")
            raise
    print("KServe interop: all checks passed")


if __name__ == "__main__":
    main()
