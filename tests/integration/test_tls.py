"""TLS on both ports from one certificate, and mutual TLS, against real servers with a CA made
here; Triton's gRPC client and the gRPC project's health stubs over TLS."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton
from grpc_health.v1 import health_pb2 as hpb
from grpc_health.v1 import health_pb2_grpc

from inferline.loadtest.runner import tls_context
from tests.certs import (
    make_certificates,
    make_out_of_date,
    make_refused_by_grpc,
    make_server_auth_only,
)
from tests.conftest import Server, ServerFactory, free_port, model_dir
from tests.deploy.dockerfile import run_healthcheck

TEXT = {"text": "Works great, love it."}


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("tls")
    make_certificates(directory)
    return directory


def tls_env(certs: Path, mutual: bool = False) -> dict[str, str]:
    env = {
        "INFERLINE_TLS_CERT_FILE": str(certs / "server.crt"),
        "INFERLINE_TLS_KEY_FILE": str(certs / "server.key"),
    }
    if mutual:
        env["INFERLINE_TLS_CLIENT_CA_FILE"] = str(certs / "ca.crt")
    return env


def client(certs: Path, cert: bool = False) -> httpx.Client:
    context = ssl.create_default_context(cafile=certs / "ca.crt")
    if cert:
        context.load_cert_chain(certs / "client.crt", certs / "client.key")
    return httpx.Client(verify=context, timeout=10)


@pytest.fixture(scope="module")
def tls_server(server_factory: ServerFactory, certs: Path) -> Iterator[Server]:
    with client(certs) as c:
        yield server_factory(tls_env(certs), verify=c)


def channel(server: Server, certs: Path, cert: bool = False) -> grpc.Channel:
    pair = {}
    if cert:
        pair = {
            "private_key": (certs / "client.key").read_bytes(),
            "certificate_chain": (certs / "client.crt").read_bytes(),
        }
    credentials = grpc.ssl_channel_credentials((certs / "ca.crt").read_bytes(), **pair)
    return grpc.secure_channel(server.grpc_target, credentials)


def failed_start(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``inferline serve`` with ``env``, which must stop it before it binds."""
    env = {
        "INFERLINE_MODEL_DIR": str(model_dir()),
        "INFERLINE_PORT": "0",
        "INFERLINE_GRPC_PORT": "0",
        **env,
    }
    return run_module("inferline.cli", env, "serve")


def run_module(module: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m module args`` with ``env`` alone, and no terminal to prompt on."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        env={
            "PATH": "/usr/bin:/bin",
            # the source under test, when it is not the installed one
            **{k: v for k, v in os.environ.items() if k == "PYTHONPATH"},
            **env,
        },
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        start_new_session=True,  # no controlling terminal: OpenSSL cannot open /dev/tty
    )


def test_https_serves_and_plain_http_does_not(tls_server: Server, certs: Path) -> None:
    assert tls_server.url.startswith("https://")
    with client(certs) as c:
        r = c.post(tls_server.url + "/predict", json=TEXT)
        assert r.status_code == 200 and r.json()["label"] == "Positive"
    with pytest.raises(httpx.HTTPError):
        httpx.post(tls_server.url.replace("https", "http"), json=TEXT, timeout=5)


def test_grpc_over_tls_with_tritons_client(tls_server: Server, certs: Path) -> None:
    oip = triton.InferenceServerClient(
        tls_server.grpc_target, ssl=True, root_certificates=str(certs / "ca.crt")
    )
    try:
        tensor = triton.InferInput("text", [1], "BYTES")
        tensor.set_data_from_numpy(np.array([b"Works great, love it."], dtype=np.object_))
        assert oip.infer("sentiment", [tensor]).as_numpy("label")[0] == b"Positive"
    finally:
        oip.close()
    with channel(tls_server, certs) as secure:
        reply = health_pb2_grpc.HealthStub(secure).Check(hpb.HealthCheckRequest(), timeout=10)
        assert reply.status == hpb.HealthCheckResponse.SERVING
    with grpc.insecure_channel(tls_server.grpc_target) as plain:
        with pytest.raises(grpc.RpcError) as err:
            health_pb2_grpc.HealthStub(plain).Check(hpb.HealthCheckRequest(), timeout=5)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def test_mutual_tls_needs_a_client_certificate(server_factory: ServerFactory, certs: Path) -> None:
    with client(certs, cert=True) as trusted:
        server = server_factory(tls_env(certs, mutual=True), verify=trusted)
        assert trusted.post(server.url + "/predict", json=TEXT).status_code == 200
    with client(certs) as anonymous, pytest.raises(httpx.HTTPError):
        anonymous.post(server.url + "/predict", json=TEXT)
    with channel(server, certs, cert=True) as secure:
        reply = health_pb2_grpc.HealthStub(secure).Check(hpb.HealthCheckRequest(), timeout=10)
        assert reply.status == hpb.HealthCheckResponse.SERVING
    with channel(server, certs) as secure, pytest.raises(grpc.RpcError) as err:
        health_pb2_grpc.HealthStub(secure).Check(hpb.HealthCheckRequest(), timeout=5)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def test_the_image_healthcheck_speaks_tls_and_mutual_tls(
    tls_server: Server, server_factory: ServerFactory, certs: Path
) -> None:
    nothing = str(free_port())
    port = tls_server.url.rsplit(":", 1)[1]
    env = {"INFERLINE_PORT": port, "INFERLINE_WORKER_METRICS_PORT": nothing}
    assert run_healthcheck(**env, **tls_env(certs)) == 0
    assert run_healthcheck(**env) == 1  # plain HTTP to a TLS port: not alive
    with client(certs, cert=True) as trusted:
        mutual = server_factory(tls_env(certs, mutual=True), verify=trusted)
    env["INFERLINE_PORT"] = mutual.url.rsplit(":", 1)[1]
    # It presents the server's own certificate, which the same CA signed here.
    assert run_healthcheck(**env, **tls_env(certs, mutual=True)) == 0
    assert run_healthcheck(**env, **tls_env(certs)) == 1  # no certificate: refused


def test_the_healthcheck_says_why_mutual_tls_refused_its_certificate(
    server_factory: ServerFactory, certs: Path
) -> None:
    """It presents the server's certificate: one for serverAuth alone is refused."""
    make_server_auth_only(certs)
    env = {**tls_env(certs, mutual=True), "INFERLINE_TLS_CERT_FILE": str(certs / "srvonly.crt")}
    with client(certs, cert=True) as trusted:
        server = server_factory(env, wait_ready=False, verify=trusted)
    env["INFERLINE_PORT"] = server.url.rsplit(":", 1)[1]
    env["INFERLINE_WORKER_METRICS_PORT"] = str(free_port())
    done = run_module("inferline.healthcheck", env)
    assert done.returncode == 1
    assert len(done.stderr.splitlines()) == 1 and "clientAuth" in done.stderr, done.stderr


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"INFERLINE_TLS_CERT_FILE": "server.crt"}, "set both or neither"),
        ({"INFERLINE_TLS_CLIENT_CA_FILE": "ca.crt"}, "needs tls_cert_file"),
        (
            {"INFERLINE_TLS_CERT_FILE": "ca.crt", "INFERLINE_TLS_KEY_FILE": "server.key"},
            "TLS: cannot use tls_cert_file {dir}/ca.crt with tls_key_file {dir}/server.key",
        ),
        (
            {"INFERLINE_TLS_CERT_FILE": "nope.crt", "INFERLINE_TLS_KEY_FILE": "server.key"},
            "TLS: cannot use tls_cert_file {dir}/nope.crt: No such file",
        ),
        (
            {"INFERLINE_TLS_CERT_FILE": "server.crt", "INFERLINE_TLS_KEY_FILE": "nope.key"},
            "TLS: cannot use tls_key_file {dir}/nope.key: No such file",
        ),
        (
            {
                "INFERLINE_TLS_CERT_FILE": "server.crt",
                "INFERLINE_TLS_KEY_FILE": "server.key",
                "INFERLINE_TLS_CLIENT_CA_FILE": "nope.ca",
            },
            "TLS: cannot use tls_client_ca_file {dir}/nope.ca: No such file",
        ),
    ],
    ids=[
        "cert-without-key",
        "ca-without-cert",
        "key-of-another-cert",
        "missing-cert",
        "missing-key",
        "missing-client-ca",
    ],
)
def test_bad_tls_settings_stop_the_start_with_a_message(
    certs: Path, env: dict[str, str], message: str
) -> None:
    done = failed_start({k: str(certs / v) for k, v in env.items()})
    assert done.returncode == 2, done.stderr
    assert message.format(dir=certs) in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (("nope.crt", "client.crt", "client.key"), "cannot use --cacert {dir}/nope.crt: No such"),
        (("ca.crt", "nope.crt", "client.key"), "cannot use --cert {dir}/nope.crt: No such"),
        (("ca.crt", "client.crt", "nope.key"), "cannot use --key {dir}/nope.key: No such"),
    ],
    ids=["cacert", "cert", "key"],
)
def test_bench_names_the_tls_file_it_cannot_use(
    certs: Path, names: tuple[str, str, str], message: str
) -> None:
    with pytest.raises(ValueError) as err:
        tls_context(*(certs / name for name in names))
    assert message.format(dir=certs) in str(err.value)


@pytest.mark.parametrize(
    ("cert", "key"),
    [("pss.crt", "pss.key"), ("trusted.crt", "server.key")],
    ids=["rsa-pss", "trusted"],
)
def test_files_only_grpc_refuses_stop_the_start_as_tls_not_as_a_taken_port(
    certs: Path, tmp_path: Path, cert: str, key: str
) -> None:
    for name in ("ca.crt", "ca.key", "server.crt", "server.key"):
        (tmp_path / name).write_bytes((certs / name).read_bytes())
    make_refused_by_grpc(tmp_path)
    done = failed_start(
        {
            "INFERLINE_TLS_CERT_FILE": str(tmp_path / cert),
            "INFERLINE_TLS_KEY_FILE": str(tmp_path / key),
        }
    )
    assert done.returncode == 2, done.stderr
    assert "TLS: gRPC cannot use the certificate or key" in done.stderr, done.stderr
    assert "INFERLINE_GRPC_PORT" not in done.stderr and "Traceback" not in done.stderr


def test_an_encrypted_key_is_refused_not_asked_for(certs: Path, tmp_path: Path) -> None:
    """OpenSSL would otherwise prompt for the pass phrase on the terminal."""
    encrypted = {
        **tls_env(certs, mutual=True),
        "INFERLINE_TLS_KEY_FILE": str(certs / "server.enc.key"),
    }
    done = failed_start(encrypted)
    assert done.returncode == 2, done.stderr
    assert f"TLS: tls_key_file {certs / 'server.enc.key'}: the key file is encrypted" in done.stderr
    health = run_module("inferline.healthcheck", {**encrypted, "INFERLINE_PORT": str(free_port())})
    assert health.returncode == 1 and "the key file is encrypted" in health.stderr, health.stderr
    with pytest.raises(ValueError, match=r"--key .*: the key file is encrypted"):
        tls_context(certs / "ca.crt", certs / "client.crt", certs / "server.enc.key")


@pytest.mark.parametrize(
    ("name", "warning"),
    [
        ("expired", "has expired: valid from 2020-01-01 00:00:00 UTC to 2020-02-01 00:00:00 UTC"),
        ("future", "is not valid yet: valid from 2035-01-01 00:00:00 UTC to 2036-01-01"),
    ],
    ids=["expired", "future"],
)
def test_a_certificate_out_of_its_dates_is_a_warning_at_start(
    server_factory: ServerFactory, certs: Path, tmp_path: Path, name: str, warning: str
) -> None:
    for file in ("ca.crt", "ca.key", "server.csr", "server.ext"):
        (tmp_path / file).write_bytes((certs / file).read_bytes())
    make_out_of_date(tmp_path)
    env = {**tls_env(certs), "INFERLINE_TLS_CERT_FILE": str(tmp_path / f"{name}.crt")}
    # A client that checks no dates (nor anything else), to see the server up.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with httpx.Client(verify=context, timeout=10) as blind:
        server = server_factory(env, wait_ready=False, verify=blind)
    lines = [line for line in server.output().splitlines() if "tls_cert_file" in line]
    assert len(lines) == 1 and warning in lines[0], server.output()
    assert json.loads(lines[0])["level"] == "warning"


def test_a_failed_grpc_handshake_leaves_the_log_json(
    server_factory: ServerFactory, certs: Path
) -> None:
    """gRPC core would write a plain-text line for it on stderr."""
    with client(certs) as c:
        server = server_factory(tls_env(certs), wait_ready=False, verify=c)
    with socket.create_connection(("127.0.0.1", server.grpc_port), timeout=10) as plain:
        plain.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        with contextlib.suppress(OSError):
            while plain.recv(4096):  # until the server closes it: the handshake failed
                pass
    assert server.stop() == 0
    for line in server.output().splitlines():
        json.loads(line)


def test_a_taken_grpc_port_under_tls_is_still_a_taken_port(certs: Path) -> None:
    with socket.create_server(("0.0.0.0", 0)) as taken:
        port = str(taken.getsockname()[1])
        done = failed_start({**tls_env(certs), "INFERLINE_GRPC_PORT": port})
    assert done.returncode == 2, done.stderr
    assert f"cannot bind gRPC to 0.0.0.0:{port}" in done.stderr, done.stderr
    assert "set INFERLINE_GRPC_PORT to a free port" in done.stderr


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_a_gateway_reaches_a_mutual_tls_backend(
    server_factory: ServerFactory, certs: Path, tmp_path: Path, protocol: str
) -> None:
    """inferline → OipEngine over https:// or grpcs://, with a private CA and a client
    certificate → inferline that asks for one."""
    with client(certs, cert=True) as trusted:
        backend = server_factory(tls_env(certs, mutual=True), verify=trusted)
        expected = trusted.post(backend.url + "/embed", json={"texts": ["a red bicycle"]})
    url = backend.url if protocol == "http" else f"grpcs://{backend.grpc_target}"
    config = tmp_path / "models.toml"
    config.write_text(
        f"""
[models.embedding]
engine = "oip"
url = "{url}"
protocol = "{protocol}"
tls_ca_file = "{certs / "ca.crt"}"
tls_cert_file = "{certs / "client.crt"}"
tls_key_file = "{certs / "client.key"}"
"""
    )
    gateway = server_factory({"INFERLINE_MODELS_CONFIG": str(config)})
    got = httpx.post(gateway.url + "/embed", json={"texts": ["a red bicycle"]}, timeout=30)
    assert got.status_code == 200, got.text
    np.testing.assert_allclose(got.json()["embeddings"], expected.json()["embeddings"], atol=1e-5)


def test_a_client_certificate_without_its_key_stops_the_start(certs: Path, tmp_path: Path) -> None:
    config = tmp_path / "models.toml"
    config.write_text(
        '[models.embedding]\nengine = "oip"\nurl = "https://backend:8000"\n'
        f'tls_cert_file = "{certs / "client.crt"}"\n'
    )
    done = failed_start({"INFERLINE_MODELS_CONFIG": str(config)})
    assert done.returncode == 2 and "tls_cert_file and tls_key_file go together" in done.stderr
