"""``python -m inferline.healthcheck``: the images' HEALTHCHECK, for `docker run` and
Compose (Kubernetes uses the manifests' probes instead).

One image runs either ``inferline serve`` (``/health/live`` on ``INFERLINE_PORT``) or
``inferline worker`` (on ``INFERLINE_WORKER_METRICS_PORT``), and a HEALTHCHECK cannot tell
which: the first port that takes the connection decides. Standard library only, so that
a check every few seconds costs little. A failed check says why in one line on stderr.

With ``INFERLINE_TLS_CERT_FILE`` set the API's port speaks HTTPS: the check connects over
TLS without verifying (it is its own port, on loopback). With mutual TLS
(``INFERLINE_TLS_CLIENT_CA_FILE``) it presents the server's own certificate, which passes
when the client CA also signed it, for clientAuth too; Kubernetes' HTTP probes present
none, so under mutual TLS an exec probe running this module is the way to probe
(docs/operations.md, "TLS").
"""

from __future__ import annotations

import http.client
import os
import ssl
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from inferline.keypair import load_cert_chain

TIMEOUT_S = 2.0


def targets() -> list[tuple[str, Callable[[], ssl.SSLContext | None]]]:
    """The API's port (over TLS when it is on), then the worker's (always plain); each with
    what makes its TLS context, only when its turn comes: a worker's container may carry
    the API's TLS variables without their files."""
    env = os.environ.get
    return [
        (env("INFERLINE_PORT", "8000"), tls_context),
        (env("INFERLINE_WORKER_METRICS_PORT", "9100"), lambda: None),
    ]


def tls_context() -> ssl.SSLContext | None:
    env = os.environ.get
    cert, key = env("INFERLINE_TLS_CERT_FILE"), env("INFERLINE_TLS_KEY_FILE")
    if not cert:
        return None
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # its own port, on loopback: nothing to verify
    if env("INFERLINE_TLS_CLIENT_CA_FILE") and key:
        names = ("INFERLINE_TLS_CERT_FILE", "INFERLINE_TLS_KEY_FILE")
        load_cert_chain(context, Path(cert), Path(key), names)
    return context


# Under mutual TLS a handshake refused for the certificate ends the connection this way.
MUTUAL_TLS_NOTE = (
    "under mutual TLS this check presents INFERLINE_TLS_CERT_FILE, which the client CA must "
    "have signed, for clientAuth as well as serverAuth (extendedKeyUsage)"
)


def check(port: str, context: ssl.SSLContext | None = None, note: str = "") -> bool | None:
    """True when ``/health/live`` answers 200, False when it answers otherwise or not in
    time (and why, on stderr, with ``note`` when the connection was cut), None when
    nothing listens on the port."""
    scheme = "https" if context is not None else "http"
    url = f"{scheme}://127.0.0.1:{port}/health/live"
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S, context=context) as response:
            if response.status == 200:
                return True
            return _failed(url, f"HTTP {response.status}")
    except urllib.error.HTTPError as exc:
        return _failed(url, f"HTTP {exc.code}")
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, ConnectionRefusedError):
            return None
        return _failed(url, exc.reason, note if isinstance(exc.reason, ssl.SSLError) else "")
    except (OSError, http.client.HTTPException) as exc:  # a timeout, a reset, or not HTTP at all
        cut = (ssl.SSLError, ConnectionResetError, http.client.RemoteDisconnected)
        return _failed(url, exc, note if isinstance(exc, cut) else "")


def _failed(url: str, why: object, note: str = "") -> bool:
    """Docker keeps a HEALTHCHECK's output: one line on why it failed."""
    text = str(why) or type(why).__name__
    print(f"healthcheck: {url}: {text}{'; ' + note if note else ''}", file=sys.stderr)
    return False


def main() -> int:
    mutual = bool(os.environ.get("INFERLINE_TLS_CLIENT_CA_FILE"))
    unusable = ""
    for port, make_context in targets():
        if port == "0":  # turned off
            continue
        try:
            context = make_context()
        except (OSError, ValueError) as exc:  # an unreadable certificate or key
            unusable = f"healthcheck: {exc}"
            continue  # the next port may need none
        alive = check(port, context, MUTUAL_TLS_NOTE if context is not None and mutual else "")
        if alive is not None:
            return 0 if alive else 1
    print(
        unusable
        or "healthcheck: nothing answers on the API's or the worker's port (starting, or down)",
        file=sys.stderr,
    )
    return 1


if __name__ == "__main__":
    sys.exit(main())
