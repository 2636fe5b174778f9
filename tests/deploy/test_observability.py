"""Prometheus config and rules (promtool), the Grafana dashboard and its provisioning.

What needs a running gateway (the dashboard's metric names against a live /metrics, a real
Prometheus scraping it) is in test_live_metrics.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.deploy.tools import (
    ALERTS,
    DEPLOY,
    GPU_ONLY_METRICS,
    REPO,
    TORCHSERVE_METRICS,
    alert_rules,
    check,
    dashboard,
    dashboard_queries,
    grafana_to_promql,
    load_yaml,
    metric_names,
    panels,
    tool,
)

PROMETHEUS = DEPLOY / "prometheus"
GRAFANA = DEPLOY / "grafana"


def promtool() -> str:
    return tool("promtool")


def test_promtool_check_config() -> None:
    output = check([promtool(), "check", "config", str(PROMETHEUS / "prometheus.yml")])
    assert "SUCCESS" in output


def test_promtool_check_rules() -> None:
    output = check([promtool(), "check", "rules", str(ALERTS)])
    assert f"SUCCESS: {len(alert_rules())} rules found" in output


def test_promtool_alert_unit_tests() -> None:
    """Each alert fires on the series it is about, and stays quiet on healthy ones."""
    check([promtool(), "test", "rules", str(PROMETHEUS / "alerts.test.yml")], cwd=PROMETHEUS)
    tested = {
        case["alertname"]
        for test in load_yaml(PROMETHEUS / "alerts.test.yml")["tests"]
        for case in test["alert_rule_test"]
        if case["exp_alerts"]
    }
    assert tested == {rule["alert"] for rule in alert_rules()}


def test_required_alerts() -> None:
    by_name = {rule["alert"]: rule for rule in alert_rules()}
    assert "gateway_request_duration_seconds_bucket" in by_name["GatewayP99LatencyHigh"]["expr"]
    assert "histogram_quantile(0.99" in by_name["GatewayP99LatencyHigh"]["expr"]
    assert "gateway_queue_depth" in by_name["GatewayQueueSaturated"]["expr"]
    assert 'code=~"5.."' in by_name["GatewayHigh5xxRate"]["expr"]
    assert "gateway_model_ready == 0" in by_name["GatewayModelNotReady"]["expr"]
    for rule in by_name.values():
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def test_queue_alert_tracks_the_queue_bound() -> None:
    """80 % of GATEWAY_MAX_QUEUE_SIZE: the settings default and the Kubernetes ConfigMap."""
    from service.settings import Settings
    from tests.deploy.tools import config_map_data

    expr = next(rule["expr"] for rule in alert_rules() if rule["alert"] == "GatewayQueueSaturated")
    threshold = float(expr.rsplit(">", 1)[1])
    assert threshold == pytest.approx(0.8 * Settings.model_fields["max_queue_size"].default)
    for overlay in ("cpu", "gpu"):
        assert threshold == pytest.approx(
            0.8 * int(config_map_data(overlay)["GATEWAY_MAX_QUEUE_SIZE"])
        )


def test_scrape_targets_match_the_compose_services() -> None:
    config = load_yaml(PROMETHEUS / "prometheus.yml")
    compose = load_yaml(DEPLOY / "compose.yaml")
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"gateway", "torchserve"}
    for job in jobs.values():
        for target in job["static_configs"][0]["targets"]:
            host, _port = target.split(":")
            assert host in compose["services"], target
    assert jobs["torchserve"]["static_configs"][0]["targets"] == ["torchserve:8082"]
    assert config["rule_files"] == ["alerts.yml"]


# ---- the PromQL extractor the metric-name checks rely on ----


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ('histogram_quantile(0.99, sum by (le) (rate(a_bucket{model=~"x|y"}[5m])))', {"a_bucket"}),
        ("sum(rate(a_sum[1m])) / sum(rate(a_count[1m])) > 0.5", {"a_sum", "a_count"}),
        ('max by (model, version) (q) > 204.8 and on (model) up{job="g"} offset 5m', {"q", "up"}),
        ("b == 0", {"b"}),
        ("1e3 * c_total", {"c_total"}),
    ],
)
def test_metric_name_extraction(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


# ---- Grafana ----


def test_dashboard_structure() -> None:
    board = dashboard()
    assert board["uid"] and board["title"]
    ids = [panel["id"] for panel in board["panels"]] + [
        child["id"] for panel in board["panels"] for child in panel.get("panels", [])
    ]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    variables = {var["name"]: var for var in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for panel in panels(board):
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip(), panel["title"]
            assert target["datasource"]["uid"] == "${datasource}"


def test_dashboard_covers_what_the_issue_asks() -> None:
    queries = "\n".join(expr for _, expr in dashboard_queries())
    titles = [panel["title"] for panel in panels(dashboard())]
    assert "gateway_requests_total" in queries  # request rate
    for quantile in ("0.5", "0.95", "0.99"):
        assert (
            f"histogram_quantile({quantile}, sum by (le) (rate(gateway_request_duration_seconds_bucket"
            in queries
        )
    assert (
        "gateway_queue_duration_seconds" in queries
        and "gateway_compute_duration_seconds" in queries
    )
    heatmaps = [p for p in panels(dashboard()) if p["type"] == "heatmap"]
    assert any("gateway_batch_size_bucket" in t["expr"] for p in heatmaps for t in p["targets"])
    assert set().union(*(metric_names(expr) for _, expr in dashboard_queries())) >= GPU_ONLY_METRICS
    assert any(title.startswith("TorchServe") for title in titles)


def test_dashboard_promql_parses(tmp_path: Path) -> None:
    """Every panel expression, as a recording rule: promtool parses each one."""
    rules = [
        {"record": f"dashboard:query_{index}", "expr": grafana_to_promql(expr)}
        for index, (_, expr) in enumerate(dashboard_queries())
    ]
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    check([promtool(), "check", "rules", str(path)])


def test_gpu_and_torchserve_names_are_real() -> None:
    """The names no live CPU-only gateway shows: from the gateway source and TorchServe's own
    metrics declaration (the installed torchserve 0.12 package)."""
    source = (REPO / "service" / "metrics.py").read_text()
    for name in GPU_ONLY_METRICS:
        assert f'"{name}"' in source, name
    try:
        import ts
    except ImportError:
        pytest.fail("torchserve is not installed; `make setup` installs the torchserve extra")
    declared = load_yaml(Path(ts.__file__).parent / "configs" / "metrics.yaml")
    frontend = {metric["name"] for metric in declared["ts_metrics"]["counter"]}
    assert frontend >= TORCHSERVE_METRICS
    used = set().union(*(metric_names(expr) for _, expr in dashboard_queries()))
    assert {name for name in used if name.startswith("ts_")} <= TORCHSERVE_METRICS


def test_grafana_provisioning() -> None:
    source = load_yaml(GRAFANA / "provisioning" / "datasources" / "prometheus.yml")
    (datasource,) = [d for d in source["datasources"] if d["type"] == "prometheus"]
    assert datasource["uid"] == "prometheus"
    assert datasource["url"] == "http://prometheus:9090"
    provider = load_yaml(GRAFANA / "provisioning" / "dashboards" / "model-serving.yml")[
        "providers"
    ][0]
    compose = load_yaml(DEPLOY / "compose.yaml")
    mounts = dict(volume.split(":")[:2] for volume in compose["services"]["grafana"]["volumes"])
    assert mounts["./grafana/dashboards"] == provider["options"]["path"]
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"


def test_latency_exemplars_link_to_traces() -> None:
    """The latency panels ask for exemplars, Prometheus keeps them, and Grafana turns their
    trace ids into links to the tracing backend the gateway exports to."""
    dashboard = json.loads((GRAFANA / "dashboards" / "model-serving.json").read_text())
    latency = [
        target
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
        if "gateway_request_duration_seconds_bucket" in target.get("expr", "")
    ]
    assert latency and all(target.get("exemplar") is True for target in latency)
    sources = load_yaml(GRAFANA / "provisioning" / "datasources" / "prometheus.yml")["datasources"]
    by_uid = {source["uid"]: source for source in sources}
    (destination,) = by_uid["prometheus"]["jsonData"]["exemplarTraceIdDestinations"]
    assert destination["name"] == "trace_id"  # the exemplar label service/metrics.py writes
    assert 'exemplar={"trace_id"' in (REPO / "service" / "metrics.py").read_text()
    tracing = by_uid[destination["datasourceUid"]]
    compose = load_yaml(DEPLOY / "compose.yaml")["services"]
    host, port = tracing["url"].removeprefix("http://").split(":")
    assert host in compose and compose[host]["profiles"] == ["tracing"]
    assert f"127.0.0.1:{port}:{port}" in compose[host]["ports"]
    assert "--enable-feature=exemplar-storage" in compose["prometheus"]["command"]
    endpoint = compose["gateway"]["environment"]["GATEWAY_OTLP_ENDPOINT"]
    assert endpoint.startswith(f"http://{host}:")
    assert endpoint.rsplit(":", 1)[1].split("/")[0] in compose[host]["expose"]
