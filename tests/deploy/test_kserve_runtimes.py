"""The KServe runtimes (deploy/kserve/runtime-*.yaml), checked offline and then run the way
KServe runs them, one test per layout of /mnt/models (TorchServe store, Triton repository,
single model file):

- the InferenceService (deploy/kserve/examples/) is rendered as KServe's controller renders it
  (tests/deploy/kserve.py): runtime, server-type defaults, merged container, placeholders;
- /mnt/models is laid out as the storage initializer leaves it and mounted read-only into the
  built image (`make image`: gateway:cpu; gateway-torchserve:cpu for the `pytorch` runtime);
- podman runs it with exactly the rendered args and env, under the container's security
  context, in a network namespace of its own (`--network none`), so it listens on the pod's
  ports (8080, 8081/9000) on 0.0.0.0 as in a pod; the stock clients run inside that namespace
  (`nsenter --net`, tests/deploy/kserve_client.py);
- KServe V1, V2 REST and V2 gRPC answers equal those of the same gateway run directly here with
  the same settings on the same files.

podman is required (as in test_image.py); GATEWAY_IMAGE_TESTS=skip opts out explicitly.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from service.settings import Settings
from tests.deploy import kserve
from tests.deploy.test_image import BUILD_TIMEOUT_S, IMAGE_SCRIPT, _bytes, podman
from tests.deploy.test_kubernetes import validate_definition
from tests.deploy.tools import REPO
from tests.servers import gateway

TAGS = {"gateway": "gateway:cpu", "gateway-torchserve": "gateway-torchserve:cpu"}
TARGETS = {tag: target for target, tag in TAGS.items()}

# ---- offline: the runtimes and the examples ----


@pytest.mark.parametrize("path", kserve.RUNTIMES, ids=lambda path: path.name)
def test_runtime(path: Path) -> None:
    runtime = kserve.load(path)
    assert runtime["apiVersion"] == "serving.kserve.io/v1alpha1"
    assert runtime["kind"] == "ClusterServingRuntime"
    spec = runtime["spec"]
    assert set(spec["protocolVersions"]) == {"v1", "v2", "grpc-v2"}
    assert all(entry.get("autoSelect") for entry in spec["supportedModelFormats"])
    (container,) = spec["containers"]
    validate_definition(container, "container-v1")
    for volume in spec.get("volumes", []):
        validate_definition(volume, "volume-v1")
    assert container["name"] == "kserve-container"
    assert container["args"][0] == "gateway"
    env = kserve.env_of(container)
    # KServe's HTTP port; gRPC on the port its InferenceServices declare (no `ports` here,
    # as in KServe's own runtimes: grpc-v2 InferenceServices name their h2c port).
    assert env["GATEWAY_PORT"] == "8080" and "ports" not in container
    assert spec["annotations"]["prometheus.kserve.io/port"] == env["GATEWAY_PORT"]
    assert spec["annotations"]["prometheus.kserve.io/path"] == "/metrics"
    fields = {f"GATEWAY_{name.upper()}" for name in Settings.model_fields}
    assert {name for name in env if name.startswith("GATEWAY_")} <= fields
    context = container["securityContext"]
    assert context["runAsNonRoot"] and context["runAsUser"] == 10001
    assert context["readOnlyRootFilesystem"] and not context["allowPrivilegeEscalation"]
    assert context["capabilities"]["drop"] == ["ALL"]
    assert context["seccompProfile"]["type"] == "RuntimeDefault"
    assert {mount["mountPath"] for mount in container["volumeMounts"]} == {"/tmp"}


def test_torchserve_runtime_takes_kserves_torchserve_layout() -> None:
    runtime = kserve.load(kserve.RUNTIMES[0])
    assert runtime["metadata"]["annotations"][kserve.SERVER_TYPE] == "torchserve"
    (container,) = runtime["spec"]["containers"]
    assert "--torchserve-model-store=/mnt/models/model-store" in container["args"]
    assert "--torchserve-config=/mnt/models/config/config.properties" in container["args"]
    assert "--backend=torchserve-native" in container["args"]
    env = kserve.env_of(container)
    assert env["TS_SERVICE_ENVELOPE"] == "{{.Labels.serviceEnvelope}}"
    assert env["GATEWAY_GRPC_PORT"] == "8081"  # TorchServe's KServe gRPC port
    assert {entry["name"] for entry in runtime["spec"]["supportedModelFormats"]} == {"pytorch"}


def test_triton_runtime_serves_a_file_under_the_service_name() -> None:
    runtime = kserve.load(kserve.RUNTIMES[1])
    (container,) = runtime["spec"]["containers"]
    assert kserve.SERVER_TYPE not in runtime["metadata"].get("annotations", {})
    env = kserve.env_of(container)
    assert env["GATEWAY_MODEL_NAME"] == "{{.Name}}"
    assert env["GATEWAY_GRPC_PORT"] == "9000"  # KServe's Triton runtime's
    assert "--model-store=/mnt/models" in container["args"]
    formats = {entry["name"] for entry in runtime["spec"]["supportedModelFormats"]}
    assert formats == {"onnx", "triton"}


EXAMPLES = sorted(kserve.EXAMPLES.glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda path: path.name)
def test_example_renders(path: Path) -> None:
    isvc = kserve.load(path)
    assert (isvc["apiVersion"], isvc["kind"]) == ("serving.kserve.io/v1beta1", "InferenceService")
    rendered = kserve.render(isvc)
    text = json.dumps(rendered.container)
    assert "{{" not in text and "<no value>" not in text, text
    validate_definition(rendered.container, "container-v1")
    env = kserve.env_of(rendered.container)
    grpc_ports = [port for port in rendered.container.get("ports", []) if port["name"] == "h2c"]
    if rendered.protocol == "grpc-v2":
        (port,) = grpc_ports  # the gRPC port the gateway listens on
        assert str(port["containerPort"]) == env["GATEWAY_GRPC_PORT"]
    if "TS_SERVICE_ENVELOPE" in env:
        expected = "kservev2" if rendered.protocol in ("v2", "grpc-v2") else "kserve"
        assert env["TS_SERVICE_ENVELOPE"] == expected
        assert env["PROTOCOL_VERSION"] == rendered.protocol
    else:
        assert env["GATEWAY_MODEL_NAME"] == isvc["metadata"]["name"]


def test_render_fills_placeholders_as_go_does() -> None:
    container = {"env": [{"name": "A", "value": "{{.Labels.missing}}/{{.Name}}"}]}
    filled = kserve.fill_placeholders(container, {"name": "m", "namespace": "ns"})
    assert filled["env"][0]["value"] == "<no value>/m"


# ---- run as KServe runs it ----

podman_tests = [
    pytest.mark.integration,
    pytest.mark.timeout(BUILD_TIMEOUT_S + 600),
    pytest.mark.skipif(
        os.environ.get("GATEWAY_IMAGE_TESTS") == "skip",
        reason="GATEWAY_IMAGE_TESTS=skip: image tests opted out explicitly",
    ),
]


def podman_test(function: Any) -> Any:
    for mark in reversed(podman_tests):
        function = mark(function)
    return function


def built(tag: str) -> str:
    """The image, built or reused by the script `make image` runs."""
    result = subprocess.run(
        [sys.executable, str(IMAGE_SCRIPT), "build", "--target", TARGETS[tag], "--json"],
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_S,
        check=False,
        cwd=REPO,
    )
    if result.returncode != 0:
        pytest.fail(f"building {tag} failed:\n{result.stdout[-6000:]}\n{result.stderr[-6000:]}")
    return tag


def pod_flags(rendered: kserve.Rendered, store: Path) -> list[str]:
    """The container's security context, volumes and limits as podman flags."""
    container = rendered.container
    context = container["securityContext"]
    flags = ["--network", "none", "--health-interval", "disable"]
    flags += ["--user", f"{context['runAsUser']}:{context['runAsGroup']}"]
    assert context["readOnlyRootFilesystem"] and context["runAsNonRoot"]
    flags += ["--read-only", "--read-only-tmpfs=false", "--security-opt", "no-new-privileges"]
    flags += [flag for cap in context["capabilities"]["drop"] for flag in ("--cap-drop", cap)]
    volumes = {volume["name"]: volume for volume in rendered.volumes}
    for mount in container["volumeMounts"]:
        if mount["mountPath"] == kserve.MODEL_MOUNT:
            flags += ["--volume", f"{store}:{kserve.MODEL_MOUNT}:ro"]
            continue
        size = _bytes(volumes[mount["name"]]["emptyDir"]["sizeLimit"])
        flags += ["--tmpfs", f"{mount['mountPath']}:rw,size={size},mode=1777"]
    limits = container["resources"]["limits"]
    flags += ["--memory", str(_bytes(limits["memory"])), "--cpus", str(float(limits["cpu"]))]
    for name, value in kserve.env_of(container).items():
        flags += ["--env", f"{name}={value}"]
    return flags


def local_image(rendered: kserve.Rendered) -> str:
    repository = rendered.container["image"].rsplit(":", 1)[0].rsplit("/", 1)[1]
    return built(TAGS[repository])


def in_pod(name: str, plan: dict[str, Any]) -> dict[str, Any]:
    """Run the stock clients in the container's network namespace."""
    pid = podman("inspect", "--format", "{{.State.Pid}}", name).stdout.strip()
    command = ["nsenter", f"--target={pid}", "--net", sys.executable, "-m"]
    command += ["tests.deploy.kserve_client", json.dumps(plan)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=REPO)
    if result.returncode != 0:
        logs = podman("logs", name, check=False)
        pytest.fail(f"clients in the pod failed:\n{result.stderr[-4000:]}\n{logs.stderr[-4000:]}")
    answers: dict[str, Any] = json.loads(result.stdout)
    return answers


def on_host(rendered: kserve.Rendered, store: Path, log_dir: Path, plan: dict[str, Any]) -> Any:
    """The same gateway with the same settings on the same files, run here directly."""
    args = [arg.replace(kserve.MODEL_MOUNT, str(store)) for arg in rendered.container["args"][1:]]
    env = {
        name: value.replace(kserve.MODEL_MOUNT, str(store))
        for name, value in kserve.env_of(rendered.container).items()
        if name not in ("GATEWAY_PORT", "GATEWAY_GRPC_PORT", "GATEWAY_HOST")
    }
    with gateway(store, log_dir, args=args, env=env, timeout_s=120) as server:
        from tests.deploy.kserve_client import drive

        return drive({**plan, "http": server.port, "grpc": server.grpc_port})


@pytest.fixture
def run_pod(tmp_path: Path) -> Iterator[Any]:
    started: list[str] = []

    def run(rendered: kserve.Rendered, store: Path) -> str:
        name = f"kserve-{rendered.metadata['name']}-{os.getpid()}-{len(started)}"
        image = local_image(rendered)
        podman("rm", "--force", "--ignore", name)
        podman("run", "--detach", "--name", name, *pod_flags(rendered, store), image,
               *rendered.container["args"])  # fmt: skip
        started.append(name)
        return name

    yield run
    for name in started:
        print(podman("logs", name, check=False).stderr[-3000:])
        podman("rm", "--force", "--time", "0", name, check=False)


def readable(root: Path) -> Path:
    root.chmod(0o755)
    for path in root.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return root


def same(pod: dict[str, Any], host: dict[str, Any]) -> None:
    assert pod.keys() == host.keys()
    for key, answer in pod.items():
        if key in ("v2", "grpc"):
            assert answer.keys() == host[key].keys(), key
            for output, value in answer.items():
                assert value["shape"] == host[key][output]["shape"], (key, output)
                np.testing.assert_allclose(value["data"], host[key][output]["data"], rtol=1e-6)
        else:
            assert answer == host[key], key


HANDLER = """
import torch

WEIGHT = torch.arange(12, dtype=torch.float32).reshape(4, 3) / 10


def handle(data, context):
    if data is None:  # TorchServe initialises a function handler with handle(None, context)
        return None
    # kserve: the instances; kservev2: one {"name", "shape", "datatype", "data"} per input.
    answers = []
    for item in data:
        values = item["data"] if isinstance(item, dict) else item
        answers.append((torch.tensor(values, dtype=torch.float32).reshape(-1, 4) @ WEIGHT).tolist())
    return answers
"""

SNAPSHOT = {
    "name": "startup.cfg",
    "modelCount": 1,
    "models": {
        "tiny": {
            "1.0": {
                "defaultVersion": True,
                "marName": "tiny.mar",
                "minWorkers": 1,
                "maxWorkers": 1,
                "batchSize": 1,
                "maxBatchDelay": 10,
                "responseTimeout": 60,
            }
        }
    },
}

FEATURES = [[1.0, 2.0, 3.0, 4.0], [0.5, 0.0, -1.0, 2.0]]
V2_INPUTS = [
    {"name": "features", "datatype": "FP32", "dtype": "float32", "shape": [2, 4], "data": FEATURES}
]


def torchserve_store(root: Path) -> Path:
    """KServe's TorchServe layout, as the storage initializer leaves it."""
    work = root.parent / "work"
    work.mkdir(parents=True)
    (work / "handler.py").write_text(HANDLER)
    (root / "model-store").mkdir(parents=True)
    command = [sys.executable, "-m", "model_archiver.model_packaging"]
    command += ["--model-name", "tiny", "--version", "1.0", "--handler", str(work / "handler.py")]
    command += ["--export-path", str(root / "model-store"), "--force"]
    subprocess.run(command, check=True, capture_output=True)
    (root / "config").mkdir()
    (root / "config" / "config.properties").write_text(
        "inference_address=http://0.0.0.0:8085\n"
        "management_address=http://0.0.0.0:8085\n"
        "metrics_address=http://0.0.0.0:8082\n"
        "grpc_inference_port=7070\n"
        "enable_metrics_api=true\n"
        "metrics_format=prometheus\n"
        "enable_envvars_config=true\n"
        "install_py_dep_per_model=true\n"
        "model_store=/mnt/models/model-store\n"
        f"model_snapshot={json.dumps(SNAPSHOT)}\n"
    )
    return root


@podman_test
@pytest.mark.parametrize("example", ["torchserve-v1.yaml", "torchserve-grpc-v2.yaml"])
def test_torchserve_layout(example: str, run_pod: Any, tmp_path: Path) -> None:
    store = readable(torchserve_store(tmp_path / "mnt-models"))
    rendered = kserve.render(kserve.load(kserve.EXAMPLES / example))
    env = kserve.env_of(rendered.container)
    http, grpc = int(env["GATEWAY_PORT"]), int(env["GATEWAY_GRPC_PORT"])
    if rendered.protocol == "v1":
        plan: dict[str, Any] = {"model": "tiny", "instances": FEATURES}
    else:
        plan = {"model": "tiny", "inputs": V2_INPUTS}
    started = time.monotonic()
    name = run_pod(rendered, store)
    pod = in_pod(name, {**plan, "http": http, "grpc": grpc})
    print(f"{example}: pod answered in {time.monotonic() - started:.1f} s")
    host = on_host(rendered, store, tmp_path, plan)
    same(pod, host)
    weight = np.arange(12, dtype=np.float32).reshape(4, 3) / 10
    expected = np.array(FEATURES, dtype=np.float32) @ weight
    if rendered.protocol == "v1":
        # The kserve envelope: the handler got the instances, its answer is the predictions.
        assert pod["v1"]["status"] == 200, pod
        predictions = np.array(pod["v1"]["body"]["predictions"]).reshape(2, 3)
        np.testing.assert_allclose(predictions, expected, rtol=1e-5)
    else:
        # kservev2: one output per input, named after it, flattened (TorchServe's envelope).
        for key in ("v2", "grpc"):
            assert set(pod[key]) == {"features"}, pod
            np.testing.assert_allclose(
                pod[key]["features"]["data"], expected.reshape(-1), rtol=1e-5
            )


def triton_repository(root: Path) -> Path:
    from tests.service.triton.models import two_heads_model

    two_heads_model(root / "tiny" / "1" / "model.onnx")
    (root / "tiny" / "config.pbtxt").write_text(
        'name: "tiny"\nbackend: "onnxruntime"\nmax_batch_size: 8\n'
    )
    return root


def single_file(root: Path) -> Path:
    from tests.service.triton.models import two_heads_model

    two_heads_model(root / "model.onnx")
    return root


@podman_test
@pytest.mark.parametrize(
    ("example", "layout", "model"),
    [
        ("triton-repository.yaml", triton_repository, "tiny"),
        ("onnx-file.yaml", single_file, "iris"),  # the InferenceService's name
    ],
    ids=["triton-repository", "single-file"],
)
def test_triton_layouts(
    example: str, layout: Any, model: str, run_pod: Any, tmp_path: Path
) -> None:
    store = readable(layout(tmp_path / "mnt-models"))
    rendered = kserve.render(kserve.load(kserve.EXAMPLES / example))
    env = kserve.env_of(rendered.container)
    plan = {"model": model, "instances": FEATURES, "inputs": V2_INPUTS}
    started = time.monotonic()
    name = run_pod(rendered, store)
    pod = in_pod(
        name, {**plan, "http": int(env["GATEWAY_PORT"]), "grpc": int(env["GATEWAY_GRPC_PORT"])}
    )
    print(f"{example}: pod answered in {time.monotonic() - started:.1f} s")
    host = on_host(rendered, store, tmp_path, plan)
    same(pod, host)
    assert pod["v1"]["status"] == 200, pod
    assert pod["v2_metadata"] == model
    weight = np.arange(12, dtype=np.float32).reshape(4, 3) / 10
    logits = np.array(FEATURES, dtype=np.float32) @ weight
    scores = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    for key in ("v2", "grpc"):
        np.testing.assert_allclose(pod[key]["scores"]["data"], scores.reshape(-1), rtol=1e-5)
