"""Container health check: exit 0 when a URL answers 200, 1 otherwise (standard library only).

    python healthcheck.py [URL]

The default URL is the gateway's readiness route on GATEWAY_PORT. When GATEWAY_INFERENCE_TOKEN
is set it is sent as a bearer token, so the check also works with protected health routes.
Proxies are ignored: the check is always about this container.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request


def main(argv: list[str]) -> int:
    port = os.environ.get("GATEWAY_PORT", "8000")
    url = argv[1] if len(argv) > 1 else f"http://127.0.0.1:{port}/v2/health/ready"
    request = urllib.request.Request(url)
    token = os.environ.get("GATEWAY_INFERENCE_TOKEN")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(
            request, timeout=float(os.environ.get("HEALTHCHECK_TIMEOUT", "3"))
        ) as reply:
            status = reply.status
    except urllib.error.HTTPError as error:
        status = error.code
    except (urllib.error.URLError, OSError) as error:
        print(f"unhealthy: {url}: {error}", file=sys.stderr)
        return 1
    if status != 200:
        print(f"unhealthy: {url}: HTTP {status}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
