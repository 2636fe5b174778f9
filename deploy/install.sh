#!/usr/bin/env bash
# One source of truth for installing the project: `make` and the Dockerfile both call this.
# Usage: deploy/install.sh EXTRAS [--editable]   e.g. deploy/install.sh cpu,train,dev --editable
# Installs into the active Python (a venv or the image's interpreter) with the pinned constraints.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
extras="${1:?extras, e.g. cpu or gpu,train}"
editable="${2:-}"
if [[ ",$extras," == *",cpu,"* && ",$extras," == *",gpu,"* ]]; then
    echo "install.sh: choose one of the cpu and gpu extras, not both (onnxruntime and onnxruntime-gpu overwrite each other)" >&2
    exit 2
fi
python -m pip install --quiet --upgrade pip
target="$root[$extras]"
if [[ "$editable" == "--editable" ]]; then
    python -m pip install --quiet -c "$root/constraints.txt" -e "$target"
else
    python -m pip install --quiet -c "$root/constraints.txt" "$target"
fi
