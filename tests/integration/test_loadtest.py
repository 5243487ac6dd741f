"""`inferline bench` against real servers: plain, with API keys, and over mutual TLS."""

from __future__ import annotations

import json
import ssl
from pathlib import Path
from typing import Any

import httpx
import pytest

from inferline import cli
from tests.certs import make_certificates
from tests.conftest import Server, ServerFactory

pytestmark = pytest.mark.integration


def bench(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, Any, str]:
    """Runs ``inferline bench ARGS --json --quiet``; returns its exit code, its JSON (None
    when it printed none) and its stderr."""
    code = cli.main(["bench", *args, "--duration", "1", "--json", "--quiet"])
    out, err = capsys.readouterr()
    return code, json.loads(out) if out.strip() else None, err


@pytest.fixture(scope="module")
def keyed(server_factory: ServerFactory) -> Server:
    return server_factory({"INFERLINE_API_KEYS": "k1,k2"})


def test_single_and_latency_against_a_server(
    server_factory: ServerFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    server = server_factory()
    code, runs, err = bench(capsys, server.url, "--workload", "single", "--connections", "4")
    assert code == 0 and err == ""  # --quiet: no progress
    [single] = runs
    assert single["ok"] > 0 and set(single["statuses"]) == {"200"} and single["errors"] == 0
    code, runs, _ = bench(capsys, server.url, "--workload", "latency", "--rate", "20")
    assert code == 0
    [latency] = runs
    assert latency["offered_per_s"] == 20 and latency["ok"] == 20 and latency["errors"] == 0


def test_an_api_key_from_the_option_or_the_environment(
    keyed: Server, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("INFERLINE_API_KEY", raising=False)
    code, [run], err = bench(capsys, keyed.url, "--workload", "single", "--connections", "2")
    assert code == 1 and run["ok"] == 0 and set(run["statuses"]) == {"401"}
    assert "an API key is needed (--api-key, or INFERLINE_API_KEY)" in err
    code, [run], err = bench(capsys, keyed.url, "--workload", "single", "--api-key", "nope")
    assert code == 1 and "an API key was refused" in err and "nope" not in err
    # `latency` at half the `single` maximum cannot pick a rate, and says why.
    code, runs, err = bench(capsys, keyed.url, "--workload", "latency", "--connections", "2")
    assert code == 2 and runs is None
    assert "no successful response on `single`: the service answered 401" in err
    code, [run], _ = bench(capsys, keyed.url, "--workload", "single", "--api-key", "k2")
    assert code == 0 and set(run["statuses"]) == {"200"}
    code, [run], err = bench(capsys, keyed.url + "/nope", "--workload", "single", "--api-key", "k2")
    assert code == 1 and set(run["statuses"]) == {"404"}
    assert "no request of `single` succeeded; the service answered " in err and "x 404" in err
    monkeypatch.setenv("INFERLINE_API_KEY", "k1")
    code, [run], _ = bench(capsys, keyed.url, "--workload", "latency", "--rate", "20")
    assert code == 0 and run["ok"] == 20


def test_a_key_that_would_split_the_header_is_refused(
    keyed: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    code, runs, err = bench(capsys, keyed.url, "--api-key", "k1\r\nX-Injected: 1")
    assert code == 2 and runs is None
    assert "one 'Name: value' line" in err and "Injected" not in err


def test_over_mutual_tls(
    server_factory: ServerFactory,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    make_certificates(tmp_path)
    env = {
        "INFERLINE_TLS_CERT_FILE": str(tmp_path / "server.crt"),
        "INFERLINE_TLS_KEY_FILE": str(tmp_path / "server.key"),
        "INFERLINE_TLS_CLIENT_CA_FILE": str(tmp_path / "ca.crt"),
    }
    ca, cert, key = (str(tmp_path / name) for name in ("ca.crt", "client.crt", "client.key"))
    context = ssl.create_default_context(cafile=ca)
    context.load_cert_chain(cert, key)
    with httpx.Client(verify=context, timeout=10) as trusted:
        https = server_factory(env, verify=trusted).url
    assert https.startswith("https://")
    code, [run], _ = bench(
        capsys, https, "--workload", "single", "--connections", "2",
        "--cacert", ca, "--cert", cert, "--key", key,
    )  # fmt: skip
    assert code == 0 and run["ok"] > 0 and set(run["statuses"]) == {"200"}
    # The system's CAs do not know the test CA: the first connection fails, and says why.
    code, runs, err = bench(capsys, https, "--workload", "single")
    assert code == 2 and runs is None
    assert f"cannot load-test {https}" in err and "CERTIFICATE_VERIFY_FAILED" in err
    # Trusted, but with no client certificate: the server ends each connection, and the
    # run says what the first request met instead of a bare count of errors.
    code, [run], err = bench(capsys, https, "--workload", "single", "--cacert", ca)
    assert code == 1 and run["ok"] == 0 and run["errors"] > 0
    assert "request(s) of `single` got no answer; the first: " in err, err
    code, _, err = bench(capsys, https, "--cacert", ca, "--cert", cert)
    assert code == 2 and "--cert and --key go together" in err
    code, _, err = bench(capsys, https.replace("https://", "http://"), "--cacert", ca)
    assert code == 2 and "TLS settings need an https:// URL" in err
