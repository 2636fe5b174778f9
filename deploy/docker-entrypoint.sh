#!/usr/bin/env bash
# The container start command of every image target (Dockerfile ENTRYPOINT, behind tini).
# CI runs this same script as a process: tests/deploy/test_entrypoint.py.
#
#   docker-entrypoint.sh [gateway] [FLAGS...]  the gateway: python -m service FLAGS
#   docker-entrypoint.sh torchserve            TorchServe over archives built from the model store
#   docker-entrypoint.sh train [ARGS...]       python -m training all --model-store $MODEL_STORE ARGS
#   docker-entrypoint.sh COMMAND [ARGS...]     anything else runs as is (e.g. bash)
#
# Environment: MODEL_STORE (default /models); GATEWAY_* settings (service/settings.py), of which
# GATEWAY_HOST defaults to 0.0.0.0 here, since a container must listen beyond its loopback;
# PYTHON (default python) is the interpreter.
set -euo pipefail

python="${PYTHON:-python}"
store="${MODEL_STORE:-/models}"

role="gateway"
if [[ $# -gt 0 && "$1" != -* ]]; then
    role="$1"
    shift
fi

case "$role" in
    gateway)
        export GATEWAY_HOST="${GATEWAY_HOST:-0.0.0.0}"
        export GATEWAY_MODEL_STORE="${GATEWAY_MODEL_STORE:-$store}"
        # exec: the server replaces this shell, so SIGTERM reaches it and starts the drain.
        exec "$python" -m service "$@"
        ;;
    torchserve)
        # One .mar per model of the store (highest version with a TorchScript artifact).
        archives="${TS_ARCHIVES:-/tmp/model-archives}"
        mkdir -p "$archives"
        "$python" -m deploy.torchserve.archive --model-store "$store" --out-dir "$archives" \
            --config-dir "${TS_MODEL_CONFIG_DIR:-deploy/torchserve/model-config}"
        # The project's config.properties, with what differs in a container appended (for
        # duplicate keys the last one wins): listen beyond loopback for the gateway (inference)
        # and Prometheus (metrics), the management API stays on loopback; serve the archives.
        # Token authorization is off: its keys are random per start and written inside this
        # container, where the gateway (another pod) cannot read them. The NetworkPolicy lets
        # only the gateway reach the inference port instead.
        config="${TS_CONFIG:-${TMPDIR:-/tmp}/torchserve.properties}"
        {
            cat "${TS_BASE_CONFIG:-deploy/torchserve/config.properties}"
            echo
            echo "# container overrides (deploy/docker-entrypoint.sh)"
            echo "inference_address=http://0.0.0.0:${TS_INFERENCE_PORT:-8080}"
            echo "management_address=http://127.0.0.1:${TS_MANAGEMENT_PORT:-8081}"
            echo "metrics_address=http://0.0.0.0:${TS_METRICS_PORT:-8082}"
            echo "model_store=$archives"
            echo "load_models=all"
            echo "disable_token_authorization=true"
        } >"$config"
        exec torchserve --start --foreground --no-config-snapshots --disable-token-auth \
            --ts-config "$config" --model-store "$archives" --models all "$@"
        ;;
    train)
        exec "$python" -m training all --model-store "$store" "$@"
        ;;
    *)
        exec "$role" "$@"
        ;;
esac
