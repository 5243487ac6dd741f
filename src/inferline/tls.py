"""TLS for both ports, from one certificate and key (and, for mutual TLS, a client CA)."""

from __future__ import annotations

import base64
import logging
import re
import ssl
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from inferline.config import Settings
from inferline.keypair import load_cert_chain

log = logging.getLogger(__name__)


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
    _warn_out_of_date(settings.tls_cert_file)


def _warn_out_of_date(cert: Path) -> None:
    """A warning, not a refusal: clients refuse such a certificate, yet a start with one may
    be meant (a test, a clock set wrong that is being fixed)."""
    dates = _validity(cert.read_bytes())
    if dates is None:
        return
    not_before, not_after = dates
    now = datetime.now(UTC)
    if now < not_before or now > not_after:
        state = "is not valid yet" if now < not_before else "has expired"
        log.warning(
            "TLS: the certificate in tls_cert_file %s %s: valid from %s to %s; clients "
            "will refuse it",
            cert,
            state,
            f"{not_before:%Y-%m-%d %H:%M:%S} UTC",
            f"{not_after:%Y-%m-%d %H:%M:%S} UTC",
        )


def _validity(pem: bytes) -> tuple[datetime, datetime] | None:
    """notBefore and notAfter of the first certificate in ``pem``, or None. ssl decodes a
    certificate only for a peer, and `cryptography` is no dependency: this reads the DER."""
    found = re.search(rb"-----BEGIN CERTIFICATE-----(.+?)-----END CERTIFICATE-----", pem, re.S)
    if found is None:
        return None
    try:
        der = base64.b64decode(found[1])
        # Certificate: SEQUENCE {tbsCertificate: SEQUENCE {[0] version OPTIONAL, serial,
        # signature, issuer, validity: SEQUENCE {notBefore, notAfter}, ...}, ...}
        at = _tlv(der, _tlv(der, 0)[1])[1]
        if der[at] == 0xA0:
            at = _tlv(der, at)[2]
        for _ in range(3):
            at = _tlv(der, at)[2]
        at = _tlv(der, at)[1]
        tag, start, at = _tlv(der, at)
        not_before = _time(tag, der[start:at].decode("ascii"))
        tag, start, at = _tlv(der, at)
        return not_before, _time(tag, der[start:at].decode("ascii"))
    except (IndexError, ValueError):
        return None


def _tlv(der: bytes, at: int) -> tuple[int, int, int]:
    """The tag, and where the content starts and ends, of the DER element at ``at``."""
    tag, length, at = der[at], der[at + 1], at + 2
    if length & 0x80:
        size = length & 0x7F
        length, at = int.from_bytes(der[at : at + size]), at + size
    return tag, at, at + length


def _time(tag: int, text: str) -> datetime:
    if tag == 0x17:  # UTCTime, YYMMDDHHMMSSZ: 50 to 99 are 19xx (RFC 5280)
        text = ("19" if text[:2] >= "50" else "20") + text
    return datetime.strptime(text, "%Y%m%d%H%M%SZ").replace(tzinfo=UTC)


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
