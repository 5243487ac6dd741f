"""``python -m inferline.healthcheck``: the images' HEALTHCHECK, for `docker run` and
Compose (Kubernetes uses the manifests' probes instead).

One image runs either ``inferline serve`` (``/health/live`` on ``INFERLINE_PORT``) or
``inferline worker`` (on ``INFERLINE_WORKER_METRICS_PORT``), and a HEALTHCHECK cannot tell
which: the first port that takes the connection decides. Standard library only, so that
a check every few seconds costs little.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

TIMEOUT_S = 2.0


def ports() -> list[str]:
    env = os.environ.get
    return [env("INFERLINE_PORT", "8000"), env("INFERLINE_WORKER_METRICS_PORT", "9100")]


def check(port: str) -> bool | None:
    """True when ``/health/live`` answers 200, False when it answers otherwise or not in
    time, None when nothing listens on the port."""
    url = f"http://127.0.0.1:{port}/health/live"
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            return bool(response.status == 200)
    except urllib.error.HTTPError:
        return False
    except urllib.error.URLError as exc:
        return None if isinstance(exc.reason, ConnectionRefusedError) else False
    except OSError:  # a timeout while reading, a reset
        return False


def main() -> int:
    for port in ports():
        if port == "0":  # turned off
            continue
        alive = check(port)
        if alive is not None:
            return 0 if alive else 1
    return 1


if __name__ == "__main__":
    sys.exit(main())
