"""Test certificates, made with the openssl command line: a CA, a server certificate for
127.0.0.1 and localhost, and a client certificate (for mutual TLS)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest


def _openssl(directory: Path) -> Callable[..., None]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("openssl is not installed (Debian: apt-get install -y openssl)")

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], cwd=directory, check=True, capture_output=True)

    return run


def make_certificates(directory: Path) -> None:
    """Writes ca.crt/ca.key, server.crt/server.key and client.crt/client.key, and
    server.enc.key (server.key behind the pass phrase "secret")."""
    run = _openssl(directory)
    run(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test-ca",
        "-keyout", "ca.key", "-out", "ca.crt",
    )  # fmt: skip
    (directory / "server.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    (directory / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    for name in ("server", "client"):
        run(
            "req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
            "-keyout", f"{name}.key", "-out", f"{name}.csr",
        )  # fmt: skip
        run(
            "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.crt",
        )  # fmt: skip
    run("pkey", "-in", "server.key", "-aes256", "-passout", "pass:secret", "-out", "server.enc.key")


def make_refused_by_grpc(directory: Path) -> None:
    """Files that Python's ssl takes and gRPC's does not, after make_certificates: pss.crt
    and pss.key (an RSA-PSS key), and trusted.crt (server.crt as a TRUSTED CERTIFICATE)."""
    run = _openssl(directory)
    run(
        "req", "-x509", "-newkey", "rsa-pss", "-pkeyopt", "rsa_keygen_bits:2048", "-nodes",
        "-days", "2", "-subj", "/CN=localhost", "-keyout", "pss.key", "-out", "pss.crt",
    )  # fmt: skip
    run("x509", "-in", "server.crt", "-trustout", "-out", "trusted.crt")


def make_out_of_date(directory: Path) -> None:
    """After make_certificates: expired.crt (valid in January 2020) and future.crt (from
    2035) for server.key, signed by the CA. `openssl x509` cannot set past or future dates,
    `openssl ca` can."""
    (directory / "index.txt").write_text("")
    (directory / "serial").write_text("1000\n")
    (directory / "ca.cnf").write_text(
        "[ca]\ndefault_ca = d\n[d]\ndatabase = index.txt\nserial = serial\n"
        "new_certs_dir = .\ndefault_md = sha256\npolicy = p\nunique_subject = no\n"
        "[p]\ncommonName = supplied\n"
    )
    run = _openssl(directory)
    for name, start, end in [
        ("expired", "20200101000000Z", "20200201000000Z"),
        ("future", "20350101000000Z", "20360101000000Z"),
    ]:
        run(
            "ca", "-batch", "-config", "ca.cnf", "-cert", "ca.crt", "-keyfile", "ca.key",
            "-in", "server.csr", "-extfile", "server.ext", "-startdate", start,
            "-enddate", end, "-notext", "-out", f"{name}.crt",
        )  # fmt: skip


def make_server_auth_only(directory: Path) -> None:
    """After make_certificates: srvonly.crt, for server.key, good for serverAuth alone."""
    (directory / "srvonly.ext").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"
    )
    _openssl(directory)(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "2", "-extfile", "srvonly.ext", "-out", "srvonly.crt",
    )  # fmt: skip
