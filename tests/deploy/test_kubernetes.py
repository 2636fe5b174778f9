"""Kubernetes manifests: render every overlay, validate every object offline, check the wiring.

Built-in kinds are validated (strict: unknown fields are errors) against the Kubernetes JSON
schemas that kubernetes-validate ships, for the oldest and newest versions we claim. The CRDs
(ServiceMonitor, PrometheusRule, InferenceService) have no schema there: their required fields
and references are checked here by hand, and the InferenceService's pod part against the
core PodSpec schema.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from kubernetes_validate import utils as kv
from referencing import Registry, Resource

from service.settings import Settings
from tests.deploy.tools import (
    ADAPTER_VALUES,
    ALERTS,
    INFERENCE_SERVICE,
    INFERENCE_SERVICE_GRPC,
    K8S,
    OVERLAYS,
    config_map_data,
    containers,
    load_yaml,
    named,
    objects,
    render,
    selects,
)

KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")
CRDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
}
EXPECTED_KINDS = {
    "Namespace",
    "ServiceAccount",
    "ConfigMap",
    "PersistentVolumeClaim",
    "Deployment",
    "Service",
    "HorizontalPodAutoscaler",
    "PodDisruptionBudget",
    "NetworkPolicy",
    "ServiceMonitor",
    "PrometheusRule",
}
V2_HEALTH = {"/v2/health/live", "/v2/health/ready"}
PROBE_HANDLERS = {"httpGet", "grpc", "tcpSocket", "exec"}
# Service appProtocol per gateway port: IANA `http` for HTTP/1.1, Kubernetes' h2c for gRPC.
APP_PROTOCOLS = {"http": "http", "grpc": "kubernetes.io/h2c"}


def settings_fields() -> set[str]:
    return {f"GATEWAY_{name.upper()}" for name in Settings.model_fields}


# ---- schema validation ----


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_rendered_object_validates(overlay: str, version: str) -> None:
    kinds = set()
    for doc in render(overlay):
        kinds.add(doc["kind"])
        if (doc["apiVersion"], doc["kind"]) in CRDS:
            continue  # no schema offline: test_service_monitors / test_prometheus_rule
        try:
            kv.validate(doc, version, strict=True)
        except kv.ValidationError as error:
            path = ".".join(str(part) for part in error.path)
            pytest.fail(
                f"{overlay} {doc['kind']}/{doc['metadata']['name']} ({version}): "
                f"{path}: {error.message}"
            )
    assert kinds == EXPECTED_KINDS


def test_validation_is_strict_and_offline() -> None:
    """The validator rejects an unknown field and a wrong type, from the shipped schemas."""
    deployment = copy.deepcopy(named("cpu", "Deployment", "gateway"))
    containers(deployment)[0]["securityContext"]["readOnlyRootFileSystem"] = True  # typo
    with pytest.raises(kv.ValidationError):
        kv.validate(deployment, KUBERNETES_VERSIONS[-1], strict=True)
    deployment = copy.deepcopy(named("cpu", "Deployment", "gateway"))
    deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = "30"
    with pytest.raises(kv.ValidationError):
        kv.validate(deployment, KUBERNETES_VERSIONS[-1], strict=True)


def test_validation_rejects_a_named_grpc_probe_port() -> None:
    """A gRPC probe takes a port number only (GRPCAction.port is int32), unlike httpGet."""
    deployment = copy.deepcopy(named("cpu", "Deployment", "gateway"))
    containers(deployment)[0]["readinessProbe"] = {"grpc": {"port": "grpc"}}
    for version in KUBERNETES_VERSIONS:
        with pytest.raises(kv.ValidationError):
            kv.validate(deployment, version, strict=True)


def validate_definition(data: Any, definition: str, version: str = KUBERNETES_VERSIONS[-1]) -> None:
    """Validate a fragment (a PodSpec, a Container) against one shipped schema file."""
    import jsonschema

    folder = f"kubernetes-json-schema/v{version}-local-strict"
    schema = kv.schema_contents(f"{folder}/{definition}.json", version)
    definitions = kv.schema_contents(f"{folder}/_definitions.json", version)
    registry: Registry = Resource.from_contents(schema) @ Registry()
    registry = Resource.from_contents(definitions) @ registry
    jsonschema.validators.Draft202012Validator(schema, registry=registry).validate(data)


# ---- security and resources ----


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_are_locked_down(overlay: str) -> None:
    for deployment in objects(overlay, "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        name = deployment["metadata"]["name"]
        assert pod["automountServiceAccountToken"] is False, name
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] == 10001, name  # the image's USER
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        for container in containers(deployment):
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["capabilities"]["drop"] == ["ALL"], name
            assert "add" not in context["capabilities"], name
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][kind]), (name, kind)
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                assert probe in container, (name, probe)
            mounts = {mount["mountPath"]: mount for mount in container["volumeMounts"]}
            assert mounts["/models"]["readOnly"] is True, name
            assert "/tmp" in mounts, f"{name}: a read-only root needs a writable /tmp"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_secrets_are_referenced_never_valued(overlay: str) -> None:
    assert not objects(overlay, "Secret"), "Secret values do not belong in git"
    gateway = containers(named(overlay, "Deployment", "gateway"))[0]
    refs = {
        env["name"]: env["valueFrom"]["secretKeyRef"]
        for env in gateway["env"]
        if "secretKeyRef" in env.get("valueFrom", {})
    }
    assert set(refs) == {"GATEWAY_INFERENCE_TOKEN", "GATEWAY_MANAGEMENT_TOKEN"}
    assert {ref["name"] for ref in refs.values()} == {"gateway-tokens"}
    for env in gateway["env"]:
        assert "TOKEN" not in env["name"] or "value" not in env, env["name"]
    assert not any("TOKEN" in key for key in config_map_data(overlay))


# ---- the gateway's settings, probes and shutdown ----


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_config_map_holds_real_gateway_settings(
    overlay: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = config_map_data(overlay)
    unknown = set(data) - settings_fields()
    assert not unknown, f"not gateway settings (typo?): {unknown}"
    gateway = containers(named(overlay, "Deployment", "gateway"))[0]
    env_names = {env["name"] for env in gateway["env"] if env["name"].startswith("GATEWAY_")}
    assert env_names <= settings_fields()
    # The values parse: the gateway would start with them.
    for key, value in data.items():
        monkeypatch.setenv(key, value)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.port == 8000 and str(settings.model_store) == "/models"
    # The readiness probe is a gRPC one: gRPC must be served, on the port the probe asks.
    assert settings.grpc_enabled is True and settings.grpc_port == 8001
    ref = gateway["envFrom"][0]["configMapRef"]["name"]
    assert ref in {doc["metadata"]["name"] for doc in objects(overlay, "ConfigMap")}


def probe_handler(probe: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The one action of a probe (httpGet, grpc, tcpSocket or exec) and its settings."""
    (kind,) = set(probe) & PROBE_HANDLERS
    handler: dict[str, Any] = probe[kind]
    return kind, handler


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_gateway_ports_are_the_configured_ones(overlay: str) -> None:
    gateway = containers(named(overlay, "Deployment", "gateway"))[0]
    data = config_map_data(overlay)
    ports = {port["name"]: port["containerPort"] for port in gateway["ports"]}
    assert ports == {"http": int(data["GATEWAY_PORT"]), "grpc": int(data["GATEWAY_GRPC_PORT"])}
    assert {port["protocol"] for port in gateway["ports"]} == {"TCP"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_gateway_probes(overlay: str) -> None:
    """Startup and liveness on the HTTP V2 health routes; readiness by the gRPC health service
    on the gRPC port (Kubernetes' built-in gRPC probe, overall server health)."""
    gateway = containers(named(overlay, "Deployment", "gateway"))[0]
    ports = {port["name"]: port["containerPort"] for port in gateway["ports"]}
    kind, readiness = probe_handler(gateway["readinessProbe"])
    assert kind == "grpc"
    assert readiness["port"] == ports["grpc"], "the gRPC probe must target the gRPC port"
    assert readiness.get("service", "") == "", "overall health: what the gateway keeps in step"
    for probe, paths in (("startupProbe", V2_HEALTH), ("livenessProbe", {"/v2/health/live"})):
        kind, handler = probe_handler(gateway[probe])
        assert kind == "httpGet", probe
        assert handler["path"] in paths, probe
        assert handler["port"] in {"http", ports["http"]}, probe


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_gateway_service_ports_and_app_protocols(overlay: str) -> None:
    service = named(overlay, "Service", "gateway")
    gateway = containers(named(overlay, "Deployment", "gateway"))[0]
    container_ports = {port["name"]: port["containerPort"] for port in gateway["ports"]}
    ports = {port["name"]: port for port in service["spec"]["ports"]}
    assert set(ports) == set(APP_PROTOCOLS) == set(container_ports)
    for name, port in ports.items():
        assert port["appProtocol"] == APP_PROTOCOLS[name], name
        assert port["targetPort"] == name, name
        # Clients use the same port numbers in and outside the cluster.
        assert port["port"] == container_ports[name], name
    (monitor,) = [
        m for m in objects(overlay, "ServiceMonitor") if m["metadata"]["name"] == "gateway"
    ]
    assert {endpoint["port"] for endpoint in monitor["spec"]["endpoints"]} == {"http"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_grace_period_covers_prestop_and_drain(overlay: str) -> None:
    pod = named(overlay, "Deployment", "gateway")["spec"]["template"]["spec"]
    gateway = pod["containers"][0]
    command = gateway["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    pre_stop = float(command[1])
    drain = float(config_map_data(overlay)["GATEWAY_DRAIN_SECONDS"])
    grace = pod["terminationGracePeriodSeconds"]
    assert pre_stop >= 1, "endpoints need a moment to drop the pod before the drain"
    assert grace >= pre_stop + drain + 1, f"grace {grace} < preStop {pre_stop} + drain {drain}"
    assert grace <= pre_stop + drain + 30, "a long grace period only delays rollouts"


# ---- wiring between objects ----


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_services_and_budgets_select_their_pods(overlay: str) -> None:
    deployments = objects(overlay, "Deployment")
    for service in objects(overlay, "Service"):
        matches = [
            d
            for d in deployments
            if selects(service["spec"]["selector"], d["spec"]["template"]["metadata"]["labels"])
        ]
        assert len(matches) == 1, service["metadata"]["name"]
        port_names = {port["name"] for c in containers(matches[0]) for port in c["ports"]}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in port_names, (service["metadata"]["name"], port)
    for budget in objects(overlay, "PodDisruptionBudget"):
        selector = budget["spec"]["selector"]["matchLabels"]
        matches = [
            d for d in deployments if selects(selector, d["spec"]["template"]["metadata"]["labels"])
        ]
        assert len(matches) == 1, budget["metadata"]["name"]
        # One pod at a time, and never a budget that blocks every drain.
        assert budget["spec"]["maxUnavailable"] == 1
        replicas = matches[0]["spec"].get("replicas")
        if replicas is None:  # the HPA owns it
            hpa = named(overlay, "HorizontalPodAutoscaler", matches[0]["metadata"]["name"])
            replicas = hpa["spec"]["minReplicas"]
        assert replicas >= 2, budget["metadata"]["name"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_hpa_scales_on_the_adapter_metric_with_cpu_fallback(overlay: str) -> None:
    hpa = named(overlay, "HorizontalPodAutoscaler", "gateway")
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", "gateway")
    named(overlay, "Deployment", "gateway")
    metrics = {metric["type"]: metric for metric in hpa["spec"]["metrics"]}
    assert set(metrics) == {"Pods", "Resource"}
    served = {rule["name"]["as"] for rule in load_yaml(ADAPTER_VALUES)["rules"]["custom"]}
    assert metrics["Pods"]["pods"]["metric"]["name"] in served
    assert metrics["Pods"]["pods"]["target"]["type"] == "AverageValue"
    assert metrics["Resource"]["resource"]["name"] == "cpu"
    assert metrics["Resource"]["resource"]["target"]["type"] == "Utilization"
    # Utilization is relative to the request: the pods must request CPU.
    assert "cpu" in containers(named(overlay, "Deployment", "gateway"))[0]["resources"]["requests"]
    spec = hpa["spec"]
    assert 2 <= spec["minReplicas"] < spec["maxReplicas"]
    behavior = spec["behavior"]
    assert (
        behavior["scaleUp"]["stabilizationWindowSeconds"]
        < behavior["scaleDown"]["stabilizationWindowSeconds"]
    )
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] >= 120
    assert behavior["scaleDown"]["policies"] and behavior["scaleUp"]["policies"]


def test_adapter_rule_serves_a_gateway_gauge_per_pod() -> None:
    source = (K8S.parents[1] / "service" / "metrics.py").read_text()
    for rule in load_yaml(ADAPTER_VALUES)["rules"]["custom"]:
        series = rule["seriesQuery"].split("{")[0]
        assert f'"{series}"' in source, f"{series} is not a gateway metric"
        assert set(rule["resources"]["overrides"]) == {"namespace", "pod"}
        for placeholder in ("<<.Series>>", "<<.LabelMatchers>>", "<<.GroupBy>>"):
            assert placeholder in rule["metricsQuery"]
    # The live query runs against a real Prometheus in test_live_metrics.py.


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_the_gateway_reaches_torchserve(overlay: str) -> None:
    policy = named(overlay, "NetworkPolicy", "torchserve")
    torchserve = named(overlay, "Deployment", "torchserve")
    gateway = named(overlay, "Deployment", "gateway")
    assert selects(
        policy["spec"]["podSelector"]["matchLabels"],
        torchserve["spec"]["template"]["metadata"]["labels"],
    )
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    port_names = {port["name"] for port in containers(torchserve)[0]["ports"]}
    allowed: dict[str, list[dict[str, Any]]] = {}
    for rule in policy["spec"]["ingress"]:
        for port in rule["ports"]:
            assert port["port"] in port_names
            allowed.setdefault(port["port"], []).extend(rule["from"])
    assert "management" not in allowed, "the management API is reachable from no other pod"
    (peer,) = allowed["inference"]
    assert set(peer) == {"podSelector"}, "inference: pods of this namespace only"
    assert selects(
        peer["podSelector"]["matchLabels"], gateway["spec"]["template"]["metadata"]["labels"]
    )
    assert not selects(
        peer["podSelector"]["matchLabels"], torchserve["spec"]["template"]["metadata"]["labels"]
    )
    for source in allowed["metrics"]:
        assert set(source) == {"namespaceSelector"}  # Prometheus, in its namespace


def rules_without_grpc(policies: list[dict[str, Any]], deployment: dict[str, Any]) -> list[str]:
    """Ingress rules of the policies selecting these pods that let HTTP in but not gRPC."""
    named_ports = {
        port["name"]: port["containerPort"] for c in containers(deployment) for port in c["ports"]
    }
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    found = []
    for policy in policies:
        spec = policy["spec"]
        if not selects(spec["podSelector"].get("matchLabels", {}), labels):
            continue
        if "Ingress" not in spec.get("policyTypes", ["Ingress"]):
            continue
        for index, rule in enumerate(spec.get("ingress", [])):
            if not rule.get("ports"):
                continue  # no ports listed: every port is allowed
            allowed = set()
            for port in rule["ports"]:
                if isinstance(port["port"], str):
                    allowed.add(port["port"])
                    continue
                end = port.get("endPort", port["port"])
                allowed |= {n for n, number in named_ports.items() if port["port"] <= number <= end}
            if "http" in allowed and "grpc" not in allowed:
                found.append(f"{policy['metadata']['name']} ingress[{index}]")
    return found


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_let_grpc_in_wherever_http_is(overlay: str) -> None:
    gateway = named(overlay, "Deployment", "gateway")
    assert not rules_without_grpc(objects(overlay, "NetworkPolicy"), gateway)


def test_network_policy_check_is_not_vacuous() -> None:
    gateway = named("cpu", "Deployment", "gateway")
    selector = gateway["spec"]["template"]["metadata"]["labels"]

    def policy(*ports: dict[str, Any]) -> dict[str, Any]:
        rule = {"from": [{"podSelector": {}}], "ports": list(ports)}
        return {
            "metadata": {"name": "p"},
            "spec": {"podSelector": {"matchLabels": selector}, "ingress": [rule]},
        }

    assert rules_without_grpc([policy({"port": "http"})], gateway) == ["p ingress[0]"]
    assert rules_without_grpc([policy({"port": 8000})], gateway) == ["p ingress[0]"]
    assert not rules_without_grpc([policy({"port": "http"}, {"port": "grpc"})], gateway)
    assert not rules_without_grpc([policy({"port": 8000, "endPort": 8001})], gateway)
    assert not rules_without_grpc([policy({"port": "metrics"})], gateway)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_service_monitors(overlay: str) -> None:
    services = objects(overlay, "Service")
    monitors = objects(overlay, "ServiceMonitor")
    assert {m["metadata"]["name"] for m in monitors} == {"gateway", "torchserve"}
    for monitor in monitors:
        spec = monitor["spec"]
        (service,) = [
            s for s in services if selects(spec["selector"]["matchLabels"], s["metadata"]["labels"])
        ]
        ports = {port["name"] for port in service["spec"]["ports"]}
        assert spec["endpoints"], monitor["metadata"]["name"]
        for endpoint in spec["endpoints"]:
            assert endpoint["port"] in ports
            assert endpoint["path"] == "/metrics"
            assert endpoint["interval"].endswith("s")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_prometheus_rule_is_the_alert_file(overlay: str) -> None:
    (rule,) = objects(overlay, "PrometheusRule")
    assert rule["spec"]["groups"] == load_yaml(ALERTS)["groups"]


# ---- overlays ----


def test_cpu_overlay() -> None:
    data = config_map_data("cpu")
    assert json.loads(data["GATEWAY_PROVIDERS"]) == ["CPUExecutionProvider"]
    assert "nvidia.com/gpu" not in json.dumps(render("cpu"))
    image = containers(named("cpu", "Deployment", "gateway"))[0]["image"]
    assert image.endswith("-cpu")


def test_gpu_overlay() -> None:
    data = config_map_data("gpu")
    assert json.loads(data["GATEWAY_PROVIDERS"]) == [
        "CUDAExecutionProvider",
        "CPUExecutionProvider",
    ]
    assert data["GATEWAY_DEVICE"] == "cuda"
    for name in ("gateway", "torchserve"):
        deployment = named("gpu", "Deployment", name)
        pod = deployment["spec"]["template"]["spec"]
        assert containers(deployment)[0]["resources"]["limits"]["nvidia.com/gpu"] == 1
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
            "tolerations"
        ]
        assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    image = containers(named("gpu", "Deployment", "gateway"))[0]["image"]
    assert image.endswith("-gpu")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_images_are_set_by_the_overlay(overlay: str) -> None:
    for deployment in objects(overlay, "Deployment"):
        image = containers(deployment)[0]["image"]
        assert "/" in image and ":" in image and not image.endswith(":latest"), image


# ---- KServe ----


INFERENCE_SERVICES = (INFERENCE_SERVICE, INFERENCE_SERVICE_GRPC)


def predictor_container(service: dict[str, Any]) -> dict[str, Any]:
    (container,) = service["spec"]["predictor"]["containers"]
    result: dict[str, Any] = container
    return result


@pytest.mark.parametrize("path", INFERENCE_SERVICES, ids=lambda path: path.name)
def test_inference_service(path: Path) -> None:
    service = load_yaml(path)
    assert service["apiVersion"] == "serving.kserve.io/v1beta1"
    assert service["kind"] == "InferenceService"
    assert service["metadata"]["name"]
    # The gateway's metrics live on its HTTP port, whichever port KServe routes.
    annotations = service["metadata"]["annotations"]
    assert int(annotations["prometheus.kserve.io/port"]) == Settings.model_fields["port"].default
    predictor = dict(service["spec"]["predictor"])
    # ComponentExtensionSpec fields; the rest of the predictor is a PodSpec.
    for key in ("minReplicas", "maxReplicas", "scaleMetric", "scaleTarget"):
        predictor.pop(key)
    validate_definition(predictor, "podspec-v1")
    container = predictor_container(service)
    assert container["name"] == "kserve-container"
    assert container["args"] == ["gateway"]
    (port,) = container["ports"]  # Knative: one port, named http1 or h2c
    assert port["name"] in {"http1", "h2c"}
    assert "lifecycle" not in container  # Knative refuses lifecycle hooks
    env = {item["name"]: item for item in container["env"]}
    assert env["STORAGE_URI"]["value"].startswith("pvc://")
    assert env["GATEWAY_MODEL_STORE"]["value"] == "/mnt/models"
    assert "valueFrom" in env["GATEWAY_INFERENCE_TOKEN"]
    assert {name for name in env if name.startswith("GATEWAY_")} <= settings_fields()
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert predictor["securityContext"]["runAsNonRoot"] is True


def test_inference_service_http() -> None:
    container = predictor_container(load_yaml(INFERENCE_SERVICE))
    (port,) = container["ports"]
    assert port["name"] == "http1"
    assert port["containerPort"] == Settings.model_fields["port"].default
    for probe, path in (
        ("readinessProbe", "/v2/health/ready"),
        ("livenessProbe", "/v2/health/live"),
    ):
        kind, handler = probe_handler(container[probe])
        assert (kind, handler["path"], handler["port"]) == ("httpGet", path, port["containerPort"])


def test_inference_service_grpc() -> None:
    """KServe's gRPC convention: the one port is named h2c. Knative's queue-proxy speaks HTTP/2
    to it, so no probe may be an HTTP/1.1 httpGet."""
    container = predictor_container(load_yaml(INFERENCE_SERVICE_GRPC))
    (port,) = container["ports"]
    assert port["name"] == "h2c"
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert port["containerPort"] == int(env["GATEWAY_GRPC_PORT"])
    assert port["containerPort"] == Settings.model_fields["grpc_port"].default
    kind, readiness = probe_handler(container["readinessProbe"])
    assert kind == "grpc" and readiness["port"] == port["containerPort"]
    assert readiness.get("service", "") == ""
    kind, liveness = probe_handler(container["livenessProbe"])
    assert kind in {"grpc", "tcpSocket"} and liveness["port"] == port["containerPort"]


def test_inference_service_variants_agree() -> None:
    """The gRPC variant is the HTTP one with its port, probes and gRPC port setting swapped."""

    def common(path: Path) -> dict[str, Any]:
        service = copy.deepcopy(load_yaml(path))
        del service["metadata"]["name"]
        container = predictor_container(service)
        for key in ("ports", "readinessProbe", "livenessProbe"):
            del container[key]
        container["env"] = [
            item for item in container["env"] if item["name"] != "GATEWAY_GRPC_PORT"
        ]
        result: dict[str, Any] = service
        return result

    assert common(INFERENCE_SERVICE) == common(INFERENCE_SERVICE_GRPC)
    names = {load_yaml(path)["metadata"]["name"] for path in INFERENCE_SERVICES}
    assert len(names) == len(INFERENCE_SERVICES), "each variant needs its own name"
