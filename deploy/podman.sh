#!/usr/bin/env bash
# podman with this project's settings (deploy/podman/containers.conf), the one place they live:
# `make image` (deploy/image.py) and tests/deploy/test_image.py both call podman through this.
#   deploy/podman.sh ARGS...   e.g. deploy/podman.sh run --rm gateway:cpu bash
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
command -v podman >/dev/null || {
    echo "podman.sh: podman not found; install it with \`bash deploy/install-system.sh\` (run by \`make test\`)" >&2
    exit 127
}
CONTAINERS_CONF="$here/podman/containers.conf" exec podman "$@"
