"""TLS for both ports, from one certificate and key (and, for mutual TLS, a client CA)."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

from inferline.config import Settings


def check(settings: Settings) -> None:
    """Load the files as the servers will, so that a bad one stops the start with a clear
    message (ValueError) before anything binds."""
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        load_cert_chain(context, settings.tls_cert_file, settings.tls_key_file)
        if settings.tls_client_ca_file is not None:
            load_verify_locations(context, settings.tls_client_ca_file)
    except ValueError as exc:
        raise ValueError(f"TLS: {exc}") from None


class _Encrypted(Exception):
    pass


def _refuse_password() -> bytes:
    # Without a callback OpenSSL asks for the pass phrase on the terminal: the start would
    # wait on it, or fail with "[Errno 22] Invalid argument" where there is none.
    raise _Encrypted


def load_cert_chain(
    context: ssl.SSLContext,
    cert: Path,
    key: Path,
    names: tuple[str, str] = ("tls_cert_file", "tls_key_file"),
) -> None:
    """``context.load_cert_chain``; ValueError names the setting (``names``) and file at
    fault: ssl's own errors name neither ("[Errno 2] No such file or directory")."""
    for name, path in zip(names, (cert, key), strict=True):
        try:
            path.open("rb").close()
        except OSError as exc:
            raise ValueError(f"cannot use {name} {path}: {exc.strerror or exc}") from None
    try:
        context.load_cert_chain(cert, key, password=_refuse_password)
    except _Encrypted:
        raise ValueError(
            f"{names[1]} {key}: the key file is encrypted; give an unencrypted key"
        ) from None
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"cannot use {names[0]} {cert} with {names[1]} {key}: {exc}") from None


def load_verify_locations(
    context: ssl.SSLContext, ca: Path, name: str = "tls_client_ca_file"
) -> None:
    """``context.load_verify_locations``; ValueError names the setting and file."""
    try:
        context.load_verify_locations(ca)
    except ssl.SSLError as exc:
        raise ValueError(f"cannot use {name} {ca}: {exc}") from None
    except OSError as exc:
        raise ValueError(f"cannot use {name} {ca}: {exc.strerror or exc}") from None


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return {}
    options: dict[str, Any] = {
        "ssl_certfile": str(settings.tls_cert_file),
        "ssl_keyfile": str(settings.tls_key_file),
    }
    if settings.tls_client_ca_file is not None:
        options["ssl_ca_certs"] = str(settings.tls_client_ca_file)
        options["ssl_cert_reqs"] = ssl.CERT_REQUIRED
    return options


def grpc_credentials(settings: Settings) -> Any:
    """``grpc.ServerCredentials``, or None for a plain port."""
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return None
    import grpc

    ca = settings.tls_client_ca_file
    return grpc.ssl_server_credentials(
        [(_read(settings.tls_key_file), _read(settings.tls_cert_file))],
        root_certificates=_read(ca) if ca is not None else None,
        require_client_auth=ca is not None,
    )


def _read(path: Path) -> bytes:
    return path.read_bytes()
