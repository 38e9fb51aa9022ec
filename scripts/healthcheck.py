"""Container healthcheck for the web service: exit 0 when /api/v1/health/ answers 200.

It asks under a host name the app accepts (the first of ALLOWED_HOSTS, as a browser
would), so the check passes through Django's host validation instead of being refused
with a 400 for the container's own address. Standard library only: it runs in a second.

    python scripts/healthcheck.py [URL]     (default http://127.0.0.1:8000/api/v1/health/)
"""

from __future__ import annotations

import http.client
import os
import sys
from urllib.parse import urlsplit


def host_header() -> str:
    for host in os.environ.get("ALLOWED_HOSTS", "localhost").split(","):
        host = host.strip().lstrip(".")
        if host and host != "*":
            return host
    return "localhost"


def main(argv: list[str]) -> int:
    url = urlsplit(argv[0] if argv else "http://127.0.0.1:8000/api/v1/health/")
    connection = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port or 80, timeout=5)
    try:
        # X-Forwarded-Proto: the app may redirect plain http behind its TLS proxy.
        connection.request("GET", url.path or "/", headers={"Host": host_header(), "X-Forwarded-Proto": "https"})
        status = connection.getresponse().status
    except OSError as error:
        print(f"health check failed: {error}", file=sys.stderr)
        return 1
    finally:
        connection.close()
    print(f"health: HTTP {status}")
    return 0 if status == 200 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
