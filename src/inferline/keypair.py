"""A certificate and its key into an SSL context, with errors that name the file at fault
and no pass phrase prompt. Standard library only: the HEALTHCHECK imports it every few
seconds (docs/operations.md, "TLS")."""

from __future__ import annotations

import ssl
from pathlib import Path


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
