"""The image HEALTHCHECK's probe of one port: a port that does not speak HTTP is unhealthy,
not a traceback in Docker's health log."""

from __future__ import annotations

import socket
import threading

from inferline.healthcheck import check


def test_a_port_that_does_not_speak_http_is_unhealthy() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:

        def answer_garbage() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.recv(65536)
                conn.sendall(b"\x00\x00\x12\x04\x00\x00\x00\x00\x00 not HTTP\r\n\r\n")

        threading.Thread(target=answer_garbage, daemon=True).start()
        assert check(str(listener.getsockname()[1])) is False
