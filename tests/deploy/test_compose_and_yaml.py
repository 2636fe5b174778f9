"""yamllint over every YAML file, and the compose file: schema (docker-compose config) + wiring.

`docker-compose config` (Debian's docker-compose 1.29) validates the file against the compose
schema and resolves it without a Docker engine; no container is started here.
"""

from __future__ import annotations

import os
import re
from functools import cache
from typing import Any

import pytest
import yaml

from service.settings import Settings
from tests.deploy.test_dockerfile import parse
from tests.deploy.tools import DEPLOY, DEV_HINT, REPO, check, load_yaml, repo_files, run, tool

COMPOSE = DEPLOY / "compose.yaml"
LONG_RUNNING = ("gateway", "gateway-gpu", "torchserve", "prometheus", "grafana")


def test_yamllint_every_yaml_file() -> None:
    files = repo_files(".yaml", ".yml")
    assert COMPOSE in files and len(files) >= 20
    yamllint = tool("yamllint", DEV_HINT)
    check([yamllint, "--strict", "-c", str(REPO / ".yamllint"), *map(str, files)])


def compose_config(*profiles: str, model_store: str | None = None) -> dict[str, Any]:
    """The resolved file, as `docker-compose config` prints it (short syntax kept)."""
    return _compose_config(profiles, model_store)


@cache
def _compose_config(profiles: tuple[str, ...], model_store: str | None) -> dict[str, Any]:
    command = [tool("docker-compose"), "-f", str(COMPOSE)]
    for profile in profiles:
        command += ["--profile", profile]
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("GATEWAY_", "MODEL_STORE", "GRAFANA_"))
    }
    if model_store is not None:
        environment["MODEL_STORE"] = model_store
    result = run([*command, "config"], env=environment)
    if result.returncode != 0 or result.stderr.strip():
        pytest.fail(f"docker-compose config failed or warned:\n{result.stderr}")
    config: dict[str, Any] = yaml.safe_load(result.stdout)
    return config


@pytest.mark.parametrize("profiles", [(), ("gpu",), ("gpu", "train"), ("tracing",)])
def test_compose_file_validates(profiles: tuple[str, ...]) -> None:
    config = compose_config(*profiles)
    assert {"gateway", "torchserve", "prometheus", "grafana"} <= set(config["services"])


def test_gpu_profile_reserves_an_nvidia_device() -> None:
    raw = load_yaml(COMPOSE)
    gpu = raw["services"]["gateway-gpu"]
    assert gpu["profiles"] == ["gpu"]
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    assert gpu["build"]["args"]["RUNTIME"] == "gpu"
    assert raw["services"]["gateway"]["build"]["args"]["RUNTIME"] == "cpu"
    assert raw["services"]["train"]["profiles"] == ["train"]


def test_services_are_healthchecked_and_wait_for_healthy_dependencies() -> None:
    services = compose_config("gpu", "train")["services"]
    for name in LONG_RUNNING:
        assert "test" in services[name]["healthcheck"], name
    for name, service in services.items():
        for dependency, condition in service.get("depends_on", {}).items():
            assert condition["condition"] == "service_healthy", (name, dependency)
            assert "healthcheck" in services[dependency], dependency


def test_builds_name_real_targets_and_images_are_pinned() -> None:
    _, stages = parse((REPO / "Dockerfile").read_text())
    for name, service in load_yaml(COMPOSE)["services"].items():
        if "build" in service:
            assert service["build"]["target"] in stages, name
            assert (DEPLOY / service["build"]["context"] / service["build"]["dockerfile"]).is_file()
        else:
            image = service["image"]
            assert re.search(r":v?\d+\.\d+\.\d+$", image), f"{name}: {image} is not an exact tag"


def test_gateway_settings_ports_and_shutdown() -> None:
    services = compose_config("gpu")["services"]
    fields = {f"GATEWAY_{name.upper()}" for name in Settings.model_fields}
    for name in ("gateway", "gateway-gpu"):
        service = services[name]
        environment = service["environment"]
        assert set(environment) <= fields, f"{name}: unknown settings {set(environment) - fields}"
        for token in ("GATEWAY_INFERENCE_TOKEN", "GATEWAY_MANAGEMENT_TOKEN"):
            assert environment[token] is None, "tokens pass through from the host, never valued"
        drain = float(environment["GATEWAY_DRAIN_SECONDS"])
        grace = service["stop_grace_period"]
        assert grace.endswith("s") and float(grace[:-1]) > drain
        # HTTP and gRPC, each published once, on loopback, to the port the server binds (the
        # image's GATEWAY_PORT / GATEWAY_GRPC_PORT unless the service overrides them).
        bound = {
            int(environment.get(setting) or Settings.model_fields[field].default)
            for setting, field in (("GATEWAY_PORT", "port"), ("GATEWAY_GRPC_PORT", "grpc_port"))
        }
        published = [published_port(port) for port in service["ports"]]
        assert {host_ip for host_ip, _, _ in published} == {"127.0.0.1"}, name
        assert sorted(container for _, _, container in published) == sorted(bound), name
        assert service["read_only"] is True and service["cap_drop"] == ["ALL"]
        assert "models:/models:ro" in service["volumes"]
    assert services["gateway-gpu"]["environment"]["GATEWAY_PROVIDERS"].startswith(
        '["CUDAExecutionProvider"'
    )


def published_port(port: str) -> tuple[str, int, int]:
    """(host address, host port, container port) of a short-syntax `ports` entry."""
    host_ip, host_port, container_port = port.removesuffix("/tcp").rsplit(":", 2)
    return host_ip, int(host_port), int(container_port)


def test_published_host_ports_do_not_collide() -> None:
    """Every profile at once: no two services publish the same host port."""
    services = compose_config("gpu", "train")["services"]
    host_ports = [
        published_port(port)[:2]
        for service in services.values()
        for port in service.get("ports", [])
    ]
    assert len(host_ports) == len(set(host_ports)), sorted(host_ports)
    assert ("127.0.0.1", Settings.model_fields["grpc_port"].default) in host_ports


def test_model_store_can_be_a_host_directory() -> None:
    store = str(REPO / "model_store")
    services = compose_config(model_store=store)["services"]
    assert services["gateway"]["volumes"] == [f"{store}:/models:ro"]
    assert services["torchserve"]["volumes"] == [f"{store}:/models:ro"]


def test_mounted_config_files_exist() -> None:
    for name in ("prometheus", "grafana"):
        for volume in load_yaml(COMPOSE)["services"][name]["volumes"]:
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), source
