"""The image HEALTHCHECK's probe of one port: a port that does not speak HTTP is unhealthy,
not a traceback in Docker's health log."""

from __future__ import annotations

import http.server
import socket
import threading
from pathlib import Path

import pytest

from inferline.healthcheck import check, main


def test_a_port_that_does_not_speak_http_is_unhealthy() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:

        def answer_garbage() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.recv(65536)
                conn.sendall(b"\x00\x00\x12\x04\x00\x00\x00\x00\x00 not HTTP\r\n\r\n")

        threading.Thread(target=answer_garbage, daemon=True).start()
        assert check(str(listener.getsockname()[1])) is False


class _Live(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/health/live" else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_a_worker_is_checked_without_the_apis_tls_files(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A worker's container may carry the API's mutual TLS variables, not their files."""
    with socket.socket() as nothing:
        nothing.bind(("127.0.0.1", 0))  # bound, not listening: refused
        monkeypatch.setenv("INFERLINE_PORT", str(nothing.getsockname()[1]))
        for name in ("CERT", "KEY", "CLIENT_CA"):
            monkeypatch.setenv(f"INFERLINE_TLS_{name}_FILE", str(tmp_path / name.lower()))
        with http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Live) as worker:
            threading.Thread(target=worker.serve_forever, daemon=True).start()
            monkeypatch.setenv("INFERLINE_WORKER_METRICS_PORT", str(worker.server_address[1]))
            assert main() == 0
            worker.shutdown()
        assert main() == 1  # neither answers: the files are the reason given
    assert "No such file or directory" in capsys.readouterr().err


def test_nothing_listening_says_so(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The commonest failure (starting, or crashed) left Docker's health log empty."""
    with socket.socket() as api, socket.socket() as worker:
        for sock, name in ((api, "INFERLINE_PORT"), (worker, "INFERLINE_WORKER_METRICS_PORT")):
            sock.bind(("127.0.0.1", 0))  # bound, not listening: refused
            monkeypatch.setenv(name, str(sock.getsockname()[1]))
        monkeypatch.delenv("INFERLINE_TLS_CERT_FILE", raising=False)
        assert main() == 1
    assert "nothing answers on the API's or the worker's port" in capsys.readouterr().err
