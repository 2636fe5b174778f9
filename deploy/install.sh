#!/usr/bin/env bash
# One source of truth for installing the project: `make` and the Dockerfile both call this.
# Usage: deploy/install.sh EXTRAS [--editable]   e.g. deploy/install.sh cpu,train,dev --editable
# Installs into the active Python (a venv or the image's interpreter) with the pinned constraints.
#   deploy/install.sh --torch REQUIREMENT [INDEX_URL]   torch alone (an image's own layer, e.g. the
#       CPU build); a later install with KEEP_TORCH=1 keeps it instead of constraints.txt's pin.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
if [[ "${1:-}" == "--torch" ]]; then
    requirement="${2:?a torch requirement, e.g. torch==2.14.1+cpu}"
    index="${3:-}"
    python -m pip install --quiet --upgrade pip
    python -m pip install --quiet ${index:+--extra-index-url "$index"} "$requirement"
    exit 0
fi
constraints="$root/constraints.txt"
if [[ -n "${KEEP_TORCH:-}" ]]; then
    constraints="$(mktemp)"
    grep -v -E '^(torch|torchvision)==' "$root/constraints.txt" >"$constraints"
fi
extras="${1:?extras, e.g. cpu or gpu,train}"
editable="${2:-}"
if [[ ",$extras," == *",cpu,"* && ",$extras," == *",gpu,"* ]]; then
    echo "install.sh: choose one of the cpu and gpu extras, not both (onnxruntime and onnxruntime-gpu overwrite each other)" >&2
    exit 2
fi
python -m pip install --quiet --upgrade pip
target="$root[$extras]"
if [[ "$editable" == "--editable" ]]; then
    python -m pip install --quiet -c "$constraints" -e "$target"
else
    python -m pip install --quiet -c "$constraints" "$target"
fi
