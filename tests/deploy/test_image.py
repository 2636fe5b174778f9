"""The gateway image itself: built from the top-level Dockerfile with podman (`make image`),
run the way the Kubernetes Deployment runs it, and inspected layer by layer.

- Build: `deploy/image.py build`, the script `make image` runs; it reuses the image while its
  inputs are unchanged, so only the first run on a machine (or a change to the image's inputs)
  pays for a build.
- Run: the container configuration comes from the rendered `cpu` Deployment, not from a copy:
  its user and group, read-only root filesystem (no other writable path than the manifest's
  emptyDir, a tmpfs here), capabilities dropped, no privilege escalation, memory and CPU
  limits, the ConfigMap and env settings, a random inference token in place of the Secret, the
  model store mounted read-only, the container `args`. One difference: containers share the
  host's network here (deploy/podman/containers.conf), so the gateway binds 127.0.0.1 on free
  ports instead of the pod's 0.0.0.0:8000/8001.
- Stop: the manifest's preStop command, then `podman stop` (SIGTERM to PID 1) while requests
  are in flight, within terminationGracePeriodSeconds.

podman is required: a machine where it cannot build or run fails these tests with the reason.
The only opt-out is GATEWAY_IMAGE_TESTS=skip in the environment, which CI does not set.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import secrets
import socket
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton
from PIL import Image
from tritonclient.utils import InferenceServerException

from tests.deploy.tools import DEPLOY, REPO, containers, named
from tests.servers import free_port
from tests.tiny_models import (
    forecaster,
    full_store,
    image_weights,
    slow_model,
    tabular_weights,
)

PODMAN = str(DEPLOY / "podman.sh")
IMAGE_SCRIPT = DEPLOY / "image.py"
# The tag `make image` builds: a developer's `make image` and these tests share one image.
TAG = "gateway:cpu"
# A cold build (local base by mmdebstrap, apt and pip inside) takes minutes on 2 busy cores.
BUILD_TIMEOUT_S = 1500

pytestmark = [
    pytest.mark.integration,
    # The first test pays for a cold build; the module's fixtures are shared.
    pytest.mark.timeout(BUILD_TIMEOUT_S + 300),
    pytest.mark.skipif(
        os.environ.get("GATEWAY_IMAGE_TESTS") == "skip",
        reason="GATEWAY_IMAGE_TESTS=skip: image tests opted out explicitly",
    ),
]


def podman(
    *args: str, timeout: float = 120, check: bool = True
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [PODMAN, *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        pytest.fail(
            f"podman {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
        )
    return result


@pytest.fixture(scope="module")
def image() -> str:
    """The CPU gateway image, built (or reused) by the script `make image` runs."""
    try:
        result = subprocess.run(
            [sys.executable, str(IMAGE_SCRIPT), "build", "--tag", TAG, "--json"],
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT_S,
            check=False,
            cwd=REPO,
        )
    except FileNotFoundError as error:  # pragma: no cover - the script is in the repository
        pytest.fail(f"cannot run {IMAGE_SCRIPT}: {error}")
    if result.returncode != 0:
        pytest.fail(
            "building the gateway image with podman failed (set GATEWAY_IMAGE_TESTS=skip to "
            f"opt out explicitly):\n{result.stdout[-6000:]}\n{result.stderr[-6000:]}"
        )
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    built = f"built in {summary['seconds']:.0f} s" if summary["built"] else "reused"
    print(f"image {TAG}: {built}")
    return TAG


# ---- the Deployment's container, as podman flags ----


@dataclass
class Pod:
    """What the kubelet would be told: podman flags, the grace period, the preStop command."""

    flags: list[str]
    args: list[str]
    grace_s: float
    pre_stop: list[str]
    env: dict[str, str]


def pod_spec(store: Path, token: str, http_port: int, grpc_port: int) -> Pod:
    deployment = named("cpu", "Deployment", "gateway")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = containers(deployment)
    config = next(
        doc
        for doc in _objects("ConfigMap")
        if doc["metadata"]["name"].startswith("gateway-config-")
    )
    pod_security = pod["securityContext"]
    security = container["securityContext"]
    user = security.get("runAsUser", pod_security["runAsUser"])
    group = security.get("runAsGroup", pod_security["runAsGroup"])
    assert user != 0 and security.get("runAsNonRoot", pod_security.get("runAsNonRoot"))
    flags = ["--user", f"{user}:{group}"]
    if "fsGroup" in pod_security:
        flags += ["--group-add", str(pod_security["fsGroup"])]
    assert security["readOnlyRootFilesystem"] is True
    # podman's --read-only alone mounts tmpfs on /tmp, /run and /var/tmp; Kubernetes does not.
    flags += ["--read-only", "--read-only-tmpfs=false"]
    flags += [flag for cap in security["capabilities"]["drop"] for flag in ("--cap-drop", cap)]
    assert security["allowPrivilegeEscalation"] is False
    flags += ["--security-opt", "no-new-privileges"]
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    for mount in container["volumeMounts"]:
        volume = volumes[mount["name"]]
        if "emptyDir" in volume:
            size = _bytes(volume["emptyDir"].get("sizeLimit", "64Mi"))
            flags += ["--tmpfs", f"{mount['mountPath']}:rw,size={size},mode=1777"]
        elif "persistentVolumeClaim" in volume:
            assert mount["readOnly"] is True
            flags += ["--volume", f"{store}:{mount['mountPath']}:ro"]
        else:
            pytest.fail(f"volume {volume['name']}: no local stand-in for {sorted(volume)}")
    limits = container["resources"]["limits"]
    flags += ["--memory", str(_bytes(limits["memory"])), "--cpus", str(float(limits["cpu"]))]
    env = dict(config["data"])
    for variable in container.get("env", []):
        if "value" in variable:
            env[variable["name"]] = variable["value"]
        elif variable["name"] == "GATEWAY_INFERENCE_TOKEN":
            env[variable["name"]] = token  # the Secret's value, made up for the test
        else:
            assert variable["valueFrom"]["secretKeyRef"].get("optional"), variable
    # Host networking here (see the module docstring): loopback, free ports.
    env |= {"GATEWAY_HOST": "127.0.0.1", "GATEWAY_PORT": str(http_port)}
    env["GATEWAY_GRPC_PORT"] = str(grpc_port)
    return Pod(
        flags=flags,
        args=container["args"],
        grace_s=float(pod["terminationGracePeriodSeconds"]),
        pre_stop=container["lifecycle"]["preStop"]["exec"]["command"],
        env=env,
    )


def _objects(kind: str) -> list[dict[str, Any]]:
    from tests.deploy.tools import objects

    return objects("cpu", kind)


def _bytes(quantity: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    match = re.fullmatch(r"(\d+)(Ki|Mi|Gi)?", quantity)
    assert match, quantity
    return int(match.group(1)) * units.get(match.group(2) or "", 1)


@dataclass
class Container:
    name: str
    pod: Pod
    url: str
    grpc_address: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def logs(self) -> str:
        result = podman("logs", self.name, check=False)
        return result.stdout + result.stderr


def readable_store(root: Path) -> Path:
    """Every task's tiny model plus the slow one, readable by the container's user."""
    store = full_store(root / "models")
    forecaster(store)
    slow_model(store)
    root.chmod(0o755)
    for path in [store, *store.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return store


def wait_healthy(container: Container, timeout_s: float = 120) -> None:
    """Until the image's own HEALTHCHECK command, run inside the container, passes."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = podman("inspect", "--format", "{{.State.Status}}", container.name).stdout.strip()
        if state != "running":
            pytest.fail(f"container {state}:\n{container.logs()}")
        if podman("healthcheck", "run", container.name, check=False).returncode == 0:
            return
        time.sleep(0.5)
    pytest.fail(f"HEALTHCHECK did not pass in {timeout_s} s:\n{container.logs()}")


def start(image: str, store: Path, name: str) -> Container:
    token = secrets.token_hex(16)
    http_port, grpc_port = free_port(), free_port()
    pod = pod_spec(store, token, http_port, grpc_port)
    podman("rm", "--force", "--ignore", name)
    podman(
        "run",
        "--detach",
        "--name",
        name,
        # The image's HEALTHCHECK is run by `podman healthcheck run` below; no systemd timer.
        "--health-interval",
        "disable",
        *pod.flags,
        *(flag for key, value in pod.env.items() for flag in ("--env", f"{key}={value}")),
        image,
        *pod.args,
    )
    container = Container(
        name, pod, f"http://127.0.0.1:{http_port}", f"127.0.0.1:{grpc_port}", token
    )
    wait_healthy(container)
    return container


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return readable_store(tmp_path_factory.mktemp("image-store"))


@pytest.fixture(scope="module")
def serving(image: str, store: Path) -> Iterator[Container]:
    container = start(image, store, f"gateway-test-{os.getpid()}")
    try:
        yield container
    finally:
        print(container.logs()[-4000:])
        podman("rm", "--force", "--time", "0", container.name, check=False)


# ---- serving ----


def direct(store: Path, model: str, feed: dict[str, np.ndarray]) -> np.ndarray:
    session = ort.InferenceSession(str(store / model / "1" / "model.onnx"))
    result: np.ndarray = session.run(None, feed)[0]
    return result


def v2_inputs(
    model: str, binary: bool
) -> tuple[list[triton.InferInput], str, dict[str, np.ndarray] | None]:
    """Inputs for each tiny model, the output to check, and the direct ONNX feed (if any)."""
    rng = np.random.default_rng(3)
    if model in ("tab", "reg"):
        features = rng.normal(size=(3, 4 if model == "tab" else 3)).astype(np.float32)
        tensor = triton.InferInput("features", list(features.shape), "FP32")
        tensor.set_data_from_numpy(features, binary_data=binary)
        output = "probabilities" if model == "tab" else "prediction"
        return [tensor], output, {"features": features}
    if model == "img":
        images = rng.integers(0, 256, size=(2, 1, 8, 8), dtype=np.uint8)
        tensor = triton.InferInput("images", list(images.shape), "UINT8")
        tensor.set_data_from_numpy(images, binary_data=binary)
        return [tensor], "probabilities", {"images": images}
    if model == "txt":
        text = np.array([b"hello world", b"serving models fast"], dtype=np.object_)
        tensor = triton.InferInput("text", [2], "BYTES")
        tensor.set_data_from_numpy(text, binary_data=binary)
        return [tensor], "embedding", None
    if model == "fc":
        series = rng.normal(size=(2, 5, 1)).astype(np.float32)
        tensor = triton.InferInput("series", list(series.shape), "FP32")
        tensor.set_data_from_numpy(series, binary_data=binary)
        return [tensor], "forecast", {"series": series}
    raise AssertionError(model)


SERVED = ("tab", "reg", "img", "txt", "fc")


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_stock_tritonclient_on_every_model(serving: Container, store: Path, binary: bool) -> None:
    client = triton.InferenceServerClient(serving.url.removeprefix("http://"))
    assert client.is_server_live() and client.is_server_ready()
    for model in SERVED:
        assert client.is_model_ready(model, headers=serving.headers)
        assert client.get_model_metadata(model, headers=serving.headers)["name"] == model
        inputs, output, feed = v2_inputs(model, binary)
        wanted = [triton.InferRequestedOutput(output, binary_data=binary)]
        result = client.infer(model, inputs, outputs=wanted, headers=serving.headers)
        answer = result.as_numpy(output)
        assert answer is not None, model
        assert answer.shape[0] == inputs[0].shape()[0], (model, answer.shape)
        if feed is not None:
            np.testing.assert_allclose(answer, direct(store, model, feed), rtol=1e-5, atol=1e-6)
        else:  # text: unit-length embeddings
            np.testing.assert_allclose(np.linalg.norm(answer, axis=1), 1.0, rtol=1e-5)
    # The token is enforced: the Secret's value reached the container.
    inputs, output, _ = v2_inputs("tab", binary)
    with pytest.raises(InferenceServerException) as refused:
        client.infer("tab", inputs)
    assert refused.value.status() == "401", refused.value


def test_grpc_port_answers(serving: Container) -> None:
    client = triton_grpc.InferenceServerClient(serving.grpc_address)
    try:
        assert client.is_server_live() and client.is_server_ready()
        features = np.array([[0.1, 0.2, 0.3, 0.4]], dtype=np.float32)
        tensor = triton_grpc.InferInput("features", [1, 4], "FP32")
        tensor.set_data_from_numpy(features)
        result = client.infer("tab", [tensor], headers={"authorization": f"Bearer {serving.token}"})
        weight, bias = tabular_weights(4, 3)
        logits = features @ weight + bias
        expected = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        np.testing.assert_allclose(result.as_numpy("probabilities"), expected, rtol=1e-5)
    finally:
        client.close()


def test_predictions_upload(serving: Container) -> None:
    pixels = np.random.default_rng(5).integers(0, 256, size=(8, 8), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buffer, format="PNG")
    response = httpx.post(
        f"{serving.url}/predictions/img",
        files={"data": ("digit.png", buffer.getvalue(), "image/png")},
        headers=serving.headers,
        timeout=30,
    )
    assert response.status_code == 200, response.text
    logits = pixels.reshape(1, 64).astype(np.float32) @ image_weights(64, 10)
    assert next(iter(response.json())) == str(int(np.argmax(logits)))


def test_metrics(serving: Container) -> None:
    # After the other tests' traffic (or this one's, alone): counted per model and protocol.
    body = {
        "inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}]
    }
    assert (
        httpx.post(
            f"{serving.url}/v2/models/reg/infer", json=body, headers=serving.headers, timeout=30
        ).status_code
        == 200
    )
    text = httpx.get(f"{serving.url}/metrics", timeout=10).text
    assert re.search(r'gateway_requests_total\{[^}]*model="reg"[^}]*\} [1-9]', text), text[:2000]
    assert 'gateway_model_ready{model="fc",version="1"} 1.0' in text


def test_oversized_body_is_413_unread(serving: Container) -> None:
    """Content-Length over GATEWAY_MAX_BODY_BYTES (default 16 MiB): 413 before the body."""
    limit = 16 * 1024 * 1024
    port = int(serving.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(
            (
                "POST /v2/models/tab/infer HTTP/1.1\r\nHost: gateway\r\n"
                f"Authorization: Bearer {serving.token}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {limit + 1}\r\n\r\n"
            ).encode()
            + b"{" * 4096
        )
        received = b""
        while chunk := connection.recv(65536):  # the server closes after its answer
            received += chunk
    reply = received.decode(errors="replace")
    status = reply.split("\r\n", 1)[0]
    assert status.split()[1] == "413", reply
    assert '"error"' in reply
    assert httpx.get(f"{serving.url}/v2/health/ready", timeout=10).status_code == 200


# ---- what runs, and what the image holds ----


def test_runs_as_the_non_root_user_with_nothing_writable(serving: Container) -> None:
    probe = (
        "import os; print(os.getuid(), os.getgid(), sorted(os.getgroups()));"
        "import pathlib\n"
        "for path in ('/opt/venv/x', '/home/app/x', '/models/x', '/x', '/tmp/x'):\n"
        "    try:\n"
        "        pathlib.Path(path).write_text('x'); print(path, 'writable')\n"
        "    except OSError as error: print(path, error.errno)\n"
        "print(open('/proc/self/status').read())"
    )
    result = podman("exec", serving.name, "python", "-c", probe)
    lines = result.stdout.splitlines()
    uid, gid, *_ = lines[0].split()
    assert (uid, gid) == ("10001", "10001"), lines[0]
    writable = [line for line in lines[1:6] if line.endswith("writable")]
    assert writable == ["/tmp/x writable"], lines[1:6]  # the emptyDir only
    capabilities = {
        key: value
        for key, _, value in (line.partition(":\t") for line in lines[6:])
        if key.startswith("Cap")
    }
    assert capabilities["CapEff"] == capabilities["CapBnd"] == "0000000000000000", capabilities
    no_new_privs = [line for line in lines if line.startswith("NoNewPrivs")]
    assert no_new_privs == ["NoNewPrivs:\t1"]
    # seccompProfile RuntimeDefault: the container runtime's default filter is on (mode 2).
    assert [line for line in lines if line.startswith("Seccomp:")] == ["Seccomp:\t2"]
    # PID 1 is tini, and its child the server itself (entrypoint exec'd), both as 10001.
    top = podman("top", serving.name, "pid", "user", "args").stdout
    assert re.search(r"^\s*1\s+(10001|app)\s+/usr/bin/tini", top, re.M), top
    assert re.search(r"(10001|app)\s+python -m service", top), top


def test_image_configuration(image: str) -> None:
    (config,) = json.loads(podman("image", "inspect", image).stdout)
    settings = config["Config"]
    assert settings["User"] == "10001:10001"
    assert settings["Entrypoint"] == ["/usr/bin/tini", "--", "/opt/app/docker-entrypoint.sh"]
    assert settings["Cmd"] == ["gateway"]
    assert set(settings["ExposedPorts"]) == {"8000/tcp", "8001/tcp"}
    assert config["Healthcheck"]["Test"] == ["CMD", "python", "/opt/app/healthcheck.py"]
    environment = dict(item.split("=", 1) for item in settings["Env"])
    assert environment["GATEWAY_PROVIDERS"] == '["CPUExecutionProvider"]'
    for key, value in environment.items():
        assert not re.search(r"TOKEN|SECRET|PASSWORD|KEY", key), (key, value)
    history = podman("history", "--no-trunc", "--format", "{{.CreatedBy}}", image).stdout
    # Only the path of the build's pip.conf (a mount, deploy/image.py) may show, never settings.
    assert not re.search(r"(?i)token|password|secret|index-url|find-links", history), history


@dataclass
class Layers:
    files: dict[str, int]  # path -> size, across every layer (deleted files included)
    links: set[str]  # the paths among them that are symbolic or hard links
    contents: dict[str, bytes]  # small text-like files worth scanning for secrets


@pytest.fixture(scope="module")
def layers(image: str, tmp_path_factory: pytest.TempPathFactory) -> Layers:
    """Every layer of the saved image, read as tar members (nothing is run)."""
    archive = tmp_path_factory.mktemp("image-layers") / "image.tar"
    podman("save", "--format", "docker-archive", "--output", str(archive), image, timeout=600)
    files: dict[str, int] = {}
    links: set[str] = set()
    contents: dict[str, bytes] = {}
    with tarfile.open(archive) as outer:
        manifest = json.load(outer.extractfile("manifest.json"))  # type: ignore[arg-type]
        for layer_name in manifest[0]["Layers"]:
            layer = outer.extractfile(layer_name)
            assert layer is not None
            with tarfile.open(fileobj=layer) as inner:
                for member in inner:
                    path = "/" + member.name.removeprefix("./")
                    files[path] = member.size
                    if member.issym() or member.islnk():
                        links.add(path)
                    keys = path.endswith((".pem", ".key"))
                    if member.isfile() and (keys or (member.size < 256 * 1024 and _scan(path))):
                        data = inner.extractfile(member)
                        if data is not None:
                            contents[path] = data.read()
    archive.unlink()
    return Layers(files, links, contents)


def _scan(path: str) -> bool:
    if path.startswith(("/usr/share/", "/usr/lib/", "/opt/venv/lib/")) and not path.endswith(
        (".pem", ".key", ".env", ".netrc", ".conf")
    ):
        return False
    return not path.endswith((".pyc", ".so"))


def test_no_torch_no_compiler_no_pip_cache(layers: Layers) -> None:
    paths = layers.files
    torch = [p for p in paths if re.search(r"/site-packages/(torch|torchvision|functorch)[/-]", p)]
    assert not torch, torch[:5]
    compilers = [
        p
        for p in paths
        if re.fullmatch(
            r"/usr/(local/)?bin/(\S+-)?(gcc|g\+\+|cc|c\+\+|clang|cpp|ld|as|make)(-\d+)?", p
        )
    ]
    assert not compilers, compilers
    assert not [p for p in paths if p.startswith("/usr/include/")], "headers in the image"
    caches = [p for p in paths if "/.cache/" in p or p.startswith("/root/.cache")]
    assert not caches, caches[:5]
    assert not [p for p in paths if p.startswith("/src/")], "build sources in the image"
    # What the gateway needs is there.
    assert any("/site-packages/onnxruntime/" in p for p in paths)
    assert "/opt/app/docker-entrypoint.sh" in paths and "/usr/bin/tini" in paths


SECRET_PATTERNS = (
    rb"-----BEGIN [A-Z ]*PRIVATE KEY-----",
    rb"(?i)aws_secret_access_key",
    rb"ghp_[A-Za-z0-9]{30,}",
    rb"(?i)(api[_-]?key|token|password)\s*[=:]\s*['\"]?[A-Za-z0-9+/_-]{16,}",
)


def test_no_secrets_in_any_layer(layers: Layers) -> None:
    # No pip configuration, not even an empty mount point left by the build's mounts.
    for name in ("/.env", "/root/.netrc", "/etc/pip.conf", "/root/.config/pip", "/etc/xdg/pip"):
        assert name not in layers.files and name + "/" not in layers.files, name
    assert not [p for p in layers.files if p.startswith(("/mnt/", "/opt/pypi", "/opt/wheels"))]
    # Key and certificate files are read whatever their size: CA bundles only, no private key.
    assert [p for p in layers.files if p.endswith(".pem")], "no .pem file at all: scan broken?"
    keys = [p for p in layers.files if p.endswith((".pem", ".key")) and p not in layers.links]
    assert keys and all(p in layers.contents for p in keys), keys
    found = [
        (path, pattern)
        for path, data in layers.contents.items()
        for pattern in SECRET_PATTERNS
        if re.search(pattern, data)
    ]
    assert not found, found


def test_image_size_is_within_the_goal(image: str) -> None:
    size = int(podman("image", "inspect", "--format", "{{.Size}}", image).stdout.strip())
    print(f"image {image}: {size / 1e6:.0f} MB")
    assert size <= 600 * 10**6, f"{size / 1e6:.0f} MB, goal 600 MB"


# ---- stop ----


async def _stop_under_load(
    container: Container, count: int, grace_s: float
) -> tuple[list[int], int]:
    """Send COUNT slow requests; once most are held, `podman stop`. (Status codes, held then.)"""
    body = {
        "inputs": [
            {"name": "features", "datatype": "FP32", "shape": [1, 1024], "data": [0.5] * 1024}
        ]
    }
    async with httpx.AsyncClient(
        base_url=container.url,
        timeout=60,
        headers=container.headers,
        limits=httpx.Limits(max_connections=count),
    ) as client:
        sent = [
            asyncio.create_task(client.post("/v2/models/slow/infer", json=body))
            for _ in range(count)
        ]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            metrics = (await client.get("/metrics")).text
            held = sum(
                float(line.split()[-1])
                for line in metrics.splitlines()
                if line.startswith("gateway_inflight_requests{")
            )
            if held >= count // 2:
                break
            await asyncio.sleep(0.01)
        else:
            pytest.fail("requests never held in flight")
        # `podman stop` sends the image's stop signal (SIGTERM) to PID 1, tini.
        stopping = asyncio.create_task(
            asyncio.to_thread(
                podman,
                "stop",
                "--time",
                str(int(grace_s)),
                container.name,
                timeout=grace_s + 30,
            )
        )
        responses = await asyncio.gather(*sent, return_exceptions=True)
        await stopping
    codes = [r.status_code if isinstance(r, httpx.Response) else -1 for r in responses]
    return codes, int(held)


def test_stop_drains_in_flight_requests_within_the_grace_period(image: str, store: Path) -> None:
    container = start(image, store, f"gateway-stop-{os.getpid()}")
    try:
        # The kubelet's order: the preStop hook, then SIGTERM; both within the grace period.
        started = time.monotonic()
        podman("exec", container.name, *container.pod.pre_stop, timeout=60)
        left = container.pod.grace_s - (time.monotonic() - started)
        codes, held = asyncio.run(_stop_under_load(container, 48, left))
        elapsed = time.monotonic() - started
        # Every request the server held at SIGTERM is answered 200 (more may be: those that
        # reached it before the signal); one that arrives during the drain gets 503 with
        # Retry-After, by design. None is dropped or reset (-1).
        assert codes.count(200) >= held and set(codes) <= {200, 503}, (held, codes)
        print(
            f"stop: {held} held at SIGTERM, {codes.count(200)} answered 200, "
            f"{codes.count(503)} 503; {elapsed:.1f} s from preStop to exit"
        )
        state = json.loads(podman("inspect", "--format", "{{json .State}}", container.name).stdout)
        assert state["Status"] == "exited" and state["ExitCode"] == 0, (state, container.logs())
        assert elapsed < container.pod.grace_s, f"{elapsed:.1f} s"
    finally:
        podman("rm", "--force", "--time", "0", container.name, check=False)
