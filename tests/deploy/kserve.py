"""KServe's part, done here as its controller does it (kserve/kserve, pkg/controller/v1beta1/
inferenceservice): pick the runtime an InferenceService names (or the auto-selected one for
its model format), apply the server type's defaults, merge the runtime container with the
predictor's, then fill the Go-template placeholders from the InferenceService's metadata."""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.deploy.tools import DEPLOY

KSERVE = DEPLOY / "kserve"
RUNTIMES = (KSERVE / "runtime-torchserve.yaml", KSERVE / "runtime-triton.yaml")
EXAMPLES = KSERVE / "examples"
MODEL_MOUNT = "/mnt/models"
SERVER_TYPE = "serving.kserve.io/server-type"


def runtimes() -> dict[str, dict[str, Any]]:
    found = {}
    for path in RUNTIMES:
        runtime = yaml.safe_load(path.read_text())
        found[runtime["metadata"]["name"]] = runtime
    return found


def select_runtime(isvc: dict[str, Any]) -> dict[str, Any]:
    """The runtime the InferenceService names, else the highest-priority auto-selectable one
    that supports its model format and protocol."""
    model = isvc["spec"]["predictor"]["model"]
    known = runtimes()
    if "runtime" in model:
        return known[model["runtime"]]
    fmt = model["modelFormat"]["name"]
    candidates = [
        (entry.get("priority", 0), runtime)
        for runtime in known.values()
        for entry in runtime["spec"]["supportedModelFormats"]
        if entry["name"] == fmt and entry.get("autoSelect")
    ]
    if not candidates:
        raise LookupError(f"no runtime for model format {fmt}")
    return max(candidates, key=lambda pair: pair[0])[1]


@dataclass
class Rendered:
    """The predictor container KServe would run, and what the pod adds around it."""

    container: dict[str, Any]
    volumes: list[dict[str, Any]]
    metadata: dict[str, Any]
    protocol: str


def render(isvc: dict[str, Any]) -> Rendered:
    isvc = copy.deepcopy(isvc)
    runtime = select_runtime(isvc)
    model = isvc["spec"]["predictor"]["model"]
    metadata = isvc["metadata"]
    metadata.setdefault("namespace", "default")
    labels = metadata.setdefault("labels", {})
    if runtime["metadata"].get("annotations", {}).get(SERVER_TYPE) == "torchserve":
        # SetTorchServeDefaults: v1 by default, the envelope label and PROTOCOL_VERSION.
        model.setdefault("protocolVersion", "v1")
        labels["serviceEnvelope"] = (
            "kservev2" if model["protocolVersion"] in ("v2", "grpc-v2") else "kserve"
        )
        model.setdefault("env", []).append(
            {"name": "PROTOCOL_VERSION", "value": model["protocolVersion"]}
        )
    protocol = model.get("protocolVersion") or _by_priority(runtime["spec"]["protocolVersions"])
    (base,) = runtime["spec"]["containers"]
    container = merge_container(base, model)
    container = fill_placeholders(container, metadata)
    # The storage initializer's volume, mounted where the runtime reads it.
    container.setdefault("volumeMounts", []).append(
        {"name": "kserve-provision-location", "mountPath": MODEL_MOUNT, "readOnly": True}
    )
    return Rendered(container, runtime["spec"].get("volumes", []), metadata, protocol)


def _by_priority(versions: list[str]) -> str:
    # GetProtocolVersionPriority: v2 first, then grpc-v2, then v1.
    for version in ("v2", "grpc-v2", "v1", "grpc-v1"):
        if version in versions:
            return version
    return versions[0]


MODEL_SPEC_ONLY = {"modelFormat", "runtime", "storageUri", "protocolVersion", "storage"}


def merge_container(runtime: dict[str, Any], model: dict[str, Any]) -> dict[str, Any]:
    """MergeRuntimeContainers: the predictor's container fields over the runtime's (env by
    name, ports by port), args appended to the runtime's."""
    merged = copy.deepcopy(runtime)
    for key, value in model.items():
        if key in MODEL_SPEC_ONLY:
            continue
        if key == "env":
            env = {item["name"]: item for item in merged.get("env", [])}
            env |= {item["name"]: item for item in value}
            merged["env"] = list(env.values())
        elif key == "args":
            merged["args"] = [*merged.get("args", []), *value]
        elif key == "resources":
            for kind, amounts in value.items():
                merged.setdefault("resources", {}).setdefault(kind, {}).update(amounts)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


_PLACEHOLDER = re.compile(r"\{\{\s*\.(\w+)(?:\.(\w+))?\s*\}\}")


def fill_placeholders(container: dict[str, Any], metadata: dict[str, Any]) -> dict[str, Any]:
    """ReplacePlaceholders: the container as JSON, executed as a Go template over the
    InferenceService's ObjectMeta (`{{.Name}}`, `{{.Labels.key}}`); a missing map key prints
    Go's `<no value>`."""
    fields = {
        "Name": metadata["name"],
        "Namespace": metadata["namespace"],
        "Labels": metadata.get("labels", {}),
        "Annotations": metadata.get("annotations", {}),
    }

    def value(match: re.Match[str]) -> str:
        field = fields[match.group(1)]
        if match.group(2) is None:
            return str(field)
        return str(field.get(match.group(2), "<no value>"))

    return json.loads(_PLACEHOLDER.sub(value, json.dumps(container)))  # type: ignore[no-any-return]


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container.get("env", []) if "value" in item}


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(path.read_text())
    return data
