"""A real gateway, real traffic, a real Prometheus (Debian's) scraping it, all on loopback.

Checks the observability files against what the gateway really exports: every metric the
dashboard, the alerts and the prometheus-adapter rule name; every dashboard query evaluates
(and returns series where traffic makes them exist); the p99 `histogram_quantile` returns a
value; the alert rules evaluate without error; the adapter's per-pod query answers.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.deploy.tools import (
    ALERTS,
    GPU_ONLY_METRICS,
    TORCHSERVE_METRICS,
    adapter_rules,
    alert_rules,
    dashboard_queries,
    exposition_names,
    grafana_to_promql,
    metric_names,
    tool,
)
from tests.servers import free_port, gateway, sample_total, wait_until_ready
from tests.tiny_models import full_store

pytestmark = pytest.mark.integration

SCRAPE_LABELS = {"namespace": "model-serving", "pod": "gateway-test-0"}
WINDOW = "30s"
# Panels that stay empty on a CPU gateway without errors: no 5xx were caused, no NVML, no
# TorchServe running. They still must evaluate without error.
MAY_BE_EMPTY = {"5xx ratio by model"}


@dataclass
class Stack:
    gateway_url: str
    prometheus_url: str
    exposition: str

    def query(self, promql: str) -> list[dict[str, Any]]:
        reply = httpx.get(
            f"{self.prometheus_url}/api/v1/query", params={"query": promql}, timeout=10
        )
        body = reply.json()
        assert reply.status_code == 200 and body["status"] == "success", f"{promql}: {body}"
        result: list[dict[str, Any]] = body["data"]["result"]
        return result


def traffic(url: str) -> None:
    """A few seconds of mixed requests: several batch sizes, models and one client error."""
    with httpx.Client(base_url=url, timeout=30) as client:
        for round_ in range(12):
            for rows in (1, 3, 8):
                data = [float((round_ + index) % 5) for index in range(rows * 4)]
                body = {
                    "inputs": [
                        {"name": "features", "datatype": "FP32", "shape": [rows, 4], "data": data}
                    ]
                }
                assert client.post("/v2/models/tab/infer", json=body).status_code == 200
            pixels = {
                "inputs": [
                    {
                        "name": "images",
                        "datatype": "UINT8",
                        "shape": [1, 1, 8, 8],
                        "data": [round_] * 64,
                    }
                ]
            }
            assert client.post("/v2/models/img/infer", json=pixels).status_code == 200
            wrong = {
                "inputs": [
                    {
                        "name": "features",
                        "datatype": "FP32",
                        "shape": [1, 3],
                        "data": [0.0, 0.0, 0.0],
                    }
                ]
            }
            assert client.post("/v2/models/tab/infer", json=wrong).status_code == 400
            time.sleep(0.5)


def prometheus_config(root: Path, target: str) -> Path:
    rules = root / "alerts.yml"
    shutil.copyfile(ALERTS, rules)
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rules)],
        "scrape_configs": [
            {
                "job_name": "gateway",
                "static_configs": [{"targets": [target], "labels": SCRAPE_LABELS}],
            }
        ],
    }
    path = root / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"Prometheus: no {what} within {timeout_s:.0f} s")
        time.sleep(0.2)


def scraped_requests(stack: Stack) -> float:
    result = stack.query("sum(gateway_requests_total)")
    return float(result[0]["value"][1]) if result else 0.0


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("observability")
    store = full_store(root / "store")
    with gateway(store, root) as server:
        port = free_port()
        config = prometheus_config(root, f"127.0.0.1:{server.port}")
        log = root / "prometheus.log"
        command = [
            tool("prometheus"),
            f"--config.file={config}",
            f"--storage.tsdb.path={root / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ]
        with log.open("wb") as sink:
            prometheus = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_until_ready(url, prometheus, timeout_s=60, path="/-/ready")
            stack = Stack(server.url, url, "")
            # rate() needs a scrape before the traffic and one after it: wait for both.
            wait_for(lambda: bool(stack.query('up{job="gateway"}')), "a first scrape")
            traffic(server.url)
            answered = sample_total(
                httpx.get(server.url + "/metrics").text, "gateway_requests_total"
            )
            wait_for(
                lambda: scraped_requests(stack) >= answered, "a scrape that saw all the traffic"
            )
            exposition = httpx.get(server.url + "/metrics").text
            yield Stack(server.url, url, exposition)
        except BaseException:
            print(log.read_text(errors="replace"))
            raise
        finally:
            prometheus.terminate()
            try:
                prometheus.wait(timeout=30)
            except subprocess.TimeoutExpired:
                prometheus.kill()
                prometheus.wait()


def test_prometheus_scrapes_the_gateway(stack: Stack) -> None:
    (up,) = stack.query('up{job="gateway"}')
    assert up["value"][1] == "1"
    assert stack.query("count(gateway_requests_total)")


def test_p99_latency_from_the_histogram(stack: Stack) -> None:
    promql = (
        f"histogram_quantile(0.99, sum by (le) "
        f"(rate(gateway_request_duration_seconds_bucket[{WINDOW}])))"
    )
    (sample,) = stack.query(promql)
    value = float(sample["value"][1])
    assert math.isfinite(value) and 0 < value < 10, value


def test_dashboard_metrics_exist_live(stack: Stack) -> None:
    live = exposition_names(stack.exposition)
    for title, expr in dashboard_queries():
        unknown = metric_names(expr) - live - GPU_ONLY_METRICS - TORCHSERVE_METRICS
        assert not unknown, f"panel {title!r}: not exported by the gateway: {unknown}"


def test_alert_and_adapter_metrics_exist_live(stack: Stack) -> None:
    live = exposition_names(stack.exposition)
    for rule in alert_rules():
        assert metric_names(rule["expr"]) <= live, rule["alert"]
    for rule in adapter_rules():
        assert metric_names(rule["seriesQuery"]) <= live


def test_every_dashboard_query_evaluates(stack: Stack) -> None:
    for title, expr in dashboard_queries():
        result = stack.query(grafana_to_promql(expr, WINDOW))
        names = metric_names(expr)
        optional = title in MAY_BE_EMPTY or names & (GPU_ONLY_METRICS | TORCHSERVE_METRICS)
        if not optional:
            assert result, f"panel {title!r} returned no series: {expr}"


def test_adapter_rule_query_answers_per_pod(stack: Stack) -> None:
    for rule in adapter_rules():
        series = rule["seriesQuery"].split("{")[0]
        matchers = ",".join(f'{key}="{value}"' for key, value in SCRAPE_LABELS.items())
        promql = (
            rule["metricsQuery"]
            .replace("<<.Series>>", series)
            .replace("<<.LabelMatchers>>", matchers)
            .replace("<<.GroupBy>>", "pod")
        )
        (sample,) = stack.query(promql)
        assert sample["metric"] == {"pod": SCRAPE_LABELS["pod"]}
        assert float(sample["value"][1]) >= 0


def test_alert_rules_evaluate_cleanly(stack: Stack) -> None:
    deadline = time.monotonic() + 10
    while True:
        groups = httpx.get(f"{stack.prometheus_url}/api/v1/rules", timeout=10).json()["data"][
            "groups"
        ]
        rules = [rule for group in groups for rule in group["rules"]]
        if rules and all(rule.get("lastEvaluation", "").startswith("2") for rule in rules):
            break
        assert time.monotonic() < deadline, "rules were not evaluated"
        time.sleep(0.5)
    assert {rule["name"] for rule in rules} == {rule["alert"] for rule in alert_rules()}
    for rule in rules:
        assert rule["health"] == "ok", f"{rule['name']}: {rule.get('lastError')}"
    # Deterministic on this traffic: every model is ready and nothing answered 5xx. (Latency
    # and queue alerts depend on the machine's speed; promtool's unit tests cover them.)
    state = {rule["name"]: rule["state"] for rule in rules}
    assert state["GatewayModelNotReady"] == "inactive"
    assert state["GatewayHigh5xxRate"] == "inactive"
