#!/usr/bin/env bash
# System packages the test suite and benchmarks use (Debian). Idempotent: installs only what is
# missing. Java 17 (for TorchServe) is expected on the machine; it is installed here if absent.
set -euo pipefail
declare -A need=(
    [java]=openjdk-17-jre-headless
    [wrk]=wrk
    # tests/deploy: promtool + a Prometheus server, compose validation, the images' PID 1
    [promtool]=prometheus
    [docker-compose]=docker-compose
    [tini]=tini
    # tests/service/test_docs_browser.py: /docs and /redoc rendered offline in headless Chromium
    [chromium]=chromium
    # tests/test_readme.py runs the README's curl lines as written (curl ... | jq .)
    [curl]=curl
    [jq]=jq
    # `make image` and tests/deploy/test_image.py: build and run the gateway image (rootful
    # podman with runc; mmdebstrap makes the local Debian base, see deploy/image.py)
    [podman]=podman
    [runc]=runc
    [mmdebstrap]=mmdebstrap
    # `podman kube play` (tests/deploy/test_kube_play.py): podman builds its pod's infra
    # (pause) image locally around catatonit, since no registry can be reached here
    [catatonit]=catatonit
    [newuidmap]=uidmap
)
# Libraries, checked by a file they install.
declare -A need_file=(
    # loadtests/grpc_gen (the C++ gRPC load generator) builds against gRPC's C++ library
    [/usr/include/grpcpp/grpcpp.h]=libgrpc++-dev
    [/usr/bin/pkg-config]=pkg-config
)
missing=()
for command in "${!need[@]}"; do
    command -v "$command" >/dev/null 2>&1 || missing+=("${need[$command]}")
done
for file in "${!need_file[@]}"; do
    [[ -e "$file" ]] || missing+=("${need_file[$file]}")
done
if ((${#missing[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        echo "install-system.sh: need root to install: ${missing[*]}" >&2
        exit 1
    fi
    echo "install-system.sh: installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
