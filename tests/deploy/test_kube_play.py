"""The Kubernetes files run, not only validate: `podman kube play` of the rendered `cpu`
overlay serves stock tritonclient, and taking it down drains with nothing lost.

Played: the gateway Deployment, its generated ConfigMap and its Service, as `kubectl kustomize
deploy/k8s/overlays/cpu` renders them (tests/deploy/tools.py), on the built image (`make image`:
gateway:cpu, reused while its inputs are unchanged). podman takes from them the container's
args, the ConfigMap (`envFrom`), the Secret reference, the security context (user and group,
read-only root, capabilities dropped, no privilege escalation), the CPU and memory limits, the
read-only model volume and the `/tmp` emptyDir. What is changed before playing, and why:

- the image: `localhost/gateway:cpu` (no registry here; `imagePullPolicy: IfNotPresent`);
- the `model-store` claim: a hostPath of a tiny store laid out here, still mounted read-only;
- the network: no bridge networking here (deploy/podman/containers.conf), so the pod shares
  the host's network; GATEWAY_PORT and GATEWAY_GRPC_PORT in the ConfigMap become free ports,
  GATEWAY_HOST 127.0.0.1. podman before 4.8 publishes every containerPort on the host, which
  host networking refuses ("PortMappings can only be used with Bridge or slirp4netns"), so
  there the container's `ports` are left out; the clients still find the ports through the
  Service's named targetPorts and the rendered containerPorts;
- names: podman has one namespace per machine, so the Deployment, the emptyDir and the Secret
  get a suffix of this run (parallel runs, a developer's own `gateway-tokens`);
- the Secret: created with `podman secret create` as JSON (key: base64 value), the form
  podman's `secretKeyRef` reads in every version; podman 4.3 stores a played `kind: Secret`
  as YAML and then cannot read it ("secret ... is not valid JSON").

Taking it down: podman before 5.1 has `podman kube down` stop the pods with a zero timeout,
i.e. SIGKILL without SIGTERM (containers/podman#19135, fixed in 5.1 by #22398): measured here
on podman 4.3.1, 15 of 47 requests in flight were reset. There `podman pod stop --time
<terminationGracePeriodSeconds>` comes first (podman before 4.7 also ignores
terminationGracePeriodSeconds: its stop timeout is podman's default, 10 s, under the 20 s
drain); from 5.1 on, `podman kube down` alone waits each container's stop timeout, which
podman takes from terminationGracePeriodSeconds since 4.7. docs/deploy.md says what podman
does not run (Service, probes, preStop, HPA, PDB, NetworkPolicy, ...).

podman is required (as in test_image.py); GATEWAY_IMAGE_TESTS=skip opts out explicitly.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import os
import re
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
import yaml
from tritonclient.utils import InferenceServerException

from service.server import CLOSE_GRACE_SECONDS
from tests.deploy.test_image import TAG, _bytes, podman
from tests.deploy.test_kserve_runtimes import built, podman_test, readable
from tests.deploy.tools import config_map_data, containers, named, objects
from tests.servers import free_port
from tests.tiny_models import busy_model, classifier, tabular_weights

# containers/podman f52b02f ("Fix all ports exposed by kube play"), first in 4.8.
PUBLISHES_EVERY_CONTAINER_PORT_BEFORE = (4, 8)
# containers/podman#22398 ("Graceful shutdown during podman kube down"), first in 5.1.
KUBE_DOWN_KILLS_BEFORE = (5, 1)
# containers/podman d9a8546 ("Add support for kube TerminationGracePeriodSeconds"), 4.7.
GRACE_PERIOD_IS_STOP_TIMEOUT_FROM = (4, 7)
READY_TIMEOUT_S = 120
# Loop steps per request of the busy model: ~0.2 s a batch of up to 4 here (~6 us a step), so 48
# requests hold ~2 s of work when the pod is taken down, longer than podman takes to kill it.
BUSY = 30000


def podman_version() -> tuple[int, int]:
    text = podman("version", "--format", "{{.Client.Version}}").stdout.strip()
    major, minor = re.findall(r"\d+", text)[:2]
    return int(major), int(minor)


@pytest.fixture(scope="module")
def image() -> str:
    return "localhost/" + built(TAG)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tabular classifier for the clients, and a model whose cost is its input (busy) to hold
    requests in flight."""
    root = tmp_path_factory.mktemp("kube-store")
    classifier(root)
    busy_model(root)
    return readable(root)


# ---- the rendered overlay, made playable ----


@dataclass
class Plan:
    """What is played and how to reach it."""

    documents: list[dict[str, Any]]
    secret: str
    token: str
    ports: dict[str, int]  # Service port name -> the host port its targetPort leads to
    grace_s: float
    drain_s: float
    volumes: list[str] = field(default_factory=list)


def plan(image: str, store: Path, suffix: str, version: tuple[int, int]) -> Plan:
    deployment = copy.deepcopy(named("cpu", "Deployment", "gateway"))
    service = copy.deepcopy(named("cpu", "Service", "gateway"))
    (config,) = [
        copy.deepcopy(doc)
        for doc in objects("cpu", "ConfigMap")
        if doc["metadata"]["name"].startswith("gateway-config-")
    ]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = containers(deployment)
    rendered_ports = {port["name"]: port["containerPort"] for port in container["ports"]}

    # Host networking: the ports the ConfigMap sets move to free ones on loopback.
    moved = {}
    for setting in ("GATEWAY_PORT", "GATEWAY_GRPC_PORT"):
        moved[int(config["data"][setting])] = port = free_port()
        config["data"][setting] = str(port)
    for variable in container["env"]:
        if variable["name"] == "GATEWAY_HOST":
            variable["value"] = "127.0.0.1"
    if version < PUBLISHES_EVERY_CONTAINER_PORT_BEFORE:
        del container["ports"]
    # The Service is not played (podman has none); the clients follow it by hand.
    ports = {
        port["name"]: moved[rendered_ports[port["targetPort"]]] for port in service["spec"]["ports"]
    }

    deployment["metadata"]["name"] = f"gateway-{suffix}"
    container["image"] = image
    secret = f"gateway-tokens-{suffix}"
    for variable in container["env"]:
        reference = variable.get("valueFrom", {}).get("secretKeyRef")
        if reference is not None:
            assert reference["name"] == "gateway-tokens", reference
            reference["name"] = secret
    volumes = []
    renamed = {}
    for volume in pod["volumes"]:
        if "persistentVolumeClaim" in volume:
            del volume["persistentVolumeClaim"]
            volume["hostPath"] = {"path": str(store), "type": "Directory"}
        elif "emptyDir" in volume:
            renamed[volume["name"]] = volume["name"] = f"{volume['name']}-{suffix}"
            volumes.append(volume["name"])
    for mount in container["volumeMounts"]:
        mount["name"] = renamed.get(mount["name"], mount["name"])
    return Plan(
        documents=[config, service, deployment],
        secret=secret,
        token=secrets.token_hex(16),
        ports=ports,
        grace_s=float(pod["terminationGracePeriodSeconds"]),
        drain_s=float(config_map_data("cpu")["GATEWAY_DRAIN_SECONDS"]),
        volumes=volumes,
    )


@dataclass
class Played:
    plan: Plan
    path: Path
    pod: str
    container: str
    version: tuple[int, int]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.plan.ports['http']}"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.plan.token}"}

    def inspect(self) -> dict[str, Any]:
        (data,) = json.loads(podman("inspect", self.container).stdout)
        result: dict[str, Any] = data
        return result

    def logs(self) -> str:
        result = podman("logs", self.container, check=False)
        return result.stdout + result.stderr if result.returncode == 0 else ""


def wait_ready(played: Played) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        state = podman("inspect", "--format", "{{.State.Status}}", played.container).stdout
        if state.strip() != "running":
            pytest.fail(f"container {state.strip()}:\n{played.logs()[-4000:]}")
        try:
            if httpx.get(f"{played.url}/v2/health/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    pytest.fail(f"not ready in {READY_TIMEOUT_S} s:\n{played.logs()[-4000:]}")


@contextmanager
def play(image: str, store: Path, tmp_path: Path) -> Iterator[Played]:
    """`podman kube play` the plan; whatever happens, `podman kube down` and remove the rest."""
    version = podman_version()
    suffix = f"{os.getpid()}-{secrets.token_hex(3)}"
    the_plan = plan(image, store, suffix, version)
    path = tmp_path / "played.yaml"
    path.write_text(yaml.safe_dump_all(the_plan.documents, sort_keys=False))
    tokens = tmp_path / "gateway-tokens.json"
    tokens.write_text(
        json.dumps({"inference-token": base64.b64encode(the_plan.token.encode()).decode()})
    )
    played: Played | None = None
    podman("secret", "create", the_plan.secret, str(tokens))
    try:
        output = podman("kube", "play", "--network", "host", str(path), timeout=120).stdout
        pod_id = output.split("Pod:", 1)[1].split()[0]
        pod_info = json.loads(podman("pod", "inspect", pod_id).stdout)
        (member,) = [c for c in pod_info["Containers"] if c["Id"] != pod_info["InfraContainerID"]]
        played = Played(the_plan, path, pod_info["Name"], member["Name"], version)
        wait_ready(played)
        yield played
    finally:
        if played is not None:
            print(played.logs()[-4000:])
        podman("kube", "down", str(path), check=False, timeout=120)
        podman("secret", "rm", the_plan.secret, check=False)
        for volume in the_plan.volumes:
            podman("volume", "rm", "--force", volume, check=False)


# ---- serving ----


FEATURES = np.array([[0.1, 0.2, 0.3, 0.4], [1.0, -1.0, 0.5, 2.0]], dtype=np.float32)


def expected_probabilities() -> np.ndarray:
    weight, bias = tabular_weights(4, 3)
    logits = FEATURES @ weight + bias
    result: np.ndarray = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return result


@podman_test
def test_played_overlay_serves_stock_tritonclient(image: str, store: Path, tmp_path: Path) -> None:
    with play(image, store, tmp_path) as played:
        started = time.monotonic()
        http = triton_http.InferenceServerClient(f"127.0.0.1:{played.plan.ports['http']}")
        assert http.is_server_live() and http.is_server_ready()
        metadata = http.get_model_metadata("tab", headers=played.headers)
        assert metadata["name"] == "tab"
        tensor = triton_http.InferInput("features", list(FEATURES.shape), "FP32")
        tensor.set_data_from_numpy(FEATURES)
        result = http.infer("tab", [tensor], headers=played.headers)
        np.testing.assert_allclose(
            result.as_numpy("probabilities"), expected_probabilities(), rtol=1e-5
        )
        # The Secret's value reached the container through secretKeyRef.
        with pytest.raises(InferenceServerException) as refused:
            http.infer("tab", [tensor])
        assert refused.value.status() == "401", refused.value

        grpc = triton_grpc.InferenceServerClient(f"127.0.0.1:{played.plan.ports['grpc']}")
        try:
            assert grpc.is_server_live() and grpc.is_server_ready()
            grpc_tensor = triton_grpc.InferInput("features", list(FEATURES.shape), "FP32")
            grpc_tensor.set_data_from_numpy(FEATURES)
            reply = grpc.infer(
                "tab", [grpc_tensor], headers={"authorization": f"Bearer {played.plan.token}"}
            )
            np.testing.assert_allclose(
                reply.as_numpy("probabilities"), expected_probabilities(), rtol=1e-5
            )
        finally:
            grpc.close()
        print(f"podman {played.version}: answered in {time.monotonic() - started:.2f} s")
        check_container(played, store)


def check_container(played: Played, store: Path) -> None:
    """What podman made of the manifest: settings, security context, limits, volumes."""
    deployment = named("cpu", "Deployment", "gateway")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = containers(deployment)
    info = played.inspect()
    config, host = info["Config"], info["HostConfig"]
    env = dict(item.split("=", 1) for item in config["Env"])
    for key, value in played.plan.documents[0]["data"].items():  # the ConfigMap, via envFrom
        assert env[key] == value, key
    assert env["GATEWAY_INFERENCE_TOKEN"] == played.plan.token
    assert "GATEWAY_MANAGEMENT_TOKEN" not in env  # optional, absent from the Secret
    assert config["Cmd"] == container["args"]
    context = pod["securityContext"] | container["securityContext"]
    assert config["User"] == f"{context['runAsUser']}:{context['runAsGroup']}"
    assert host["ReadonlyRootfs"] is True
    assert "no-new-privileges" in host["SecurityOpt"]
    limits = container["resources"]["limits"]
    assert host["Memory"] == _bytes(limits["memory"])
    assert host["NanoCpus"] == int(float(limits["cpu"]) * 1e9)
    mounts = {mount["Destination"]: mount for mount in info["Mounts"]}
    assert mounts["/models"]["Source"] == str(store) and mounts["/models"]["RW"] is False
    assert mounts["/tmp"]["RW"] is True
    # From inside: the user, nothing writable but the emptyDir, no capability left.
    probe = (
        "import os, pathlib; print(os.getuid(), os.getgid())\n"
        "for path in ('/x', '/opt/app/x', '/models/x', '/tmp/x'):\n"
        "    try:\n"
        "        pathlib.Path(path).write_text('x'); print(path, 'writable')\n"
        "    except OSError as error: print(path, error.errno)\n"
        "print(open('/proc/self/status').read())"
    )
    lines = podman("exec", played.container, "python", "-c", probe).stdout.splitlines()
    assert lines[0].split() == [str(context["runAsUser"]), str(context["runAsGroup"])]
    assert [line for line in lines[1:5] if line.endswith("writable")] == ["/tmp/x writable"]
    assert "CapEff:\t0000000000000000" in lines
    assert "NoNewPrivs:\t1" in lines
    assert "Seccomp:\t2" in lines  # a seccomp filter is on (podman's default profile)


# ---- taking it down ----


def take_down(played: Played) -> None:
    """Take the played file down the way that drains on this podman (module docstring)."""
    if played.version < KUBE_DOWN_KILLS_BEFORE:
        grace = str(int(played.plan.grace_s))
        podman("pod", "stop", "--time", grace, played.pod, timeout=played.plan.grace_s + 30)
        state = played.inspect()["State"]
        # Exit 0: the gateway drained and exited by itself, nothing was killed (137).
        assert (state["Status"], state["ExitCode"]) == ("exited", 0), (state, played.logs())
        assert "draining for up to" in played.logs()
    podman("kube", "down", str(played.path), timeout=played.plan.grace_s + 30)


async def take_down_under_load(
    played: Played, count: int, down: Callable[[], None]
) -> tuple[list[int], int, float]:
    """COUNT slow requests; once the server holds half of them, take the pod down.
    (Status codes, -1 for no answer; requests held at that moment; seconds the stop took.)"""
    body = {"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 1], "data": [BUSY]}]}
    async with httpx.AsyncClient(
        base_url=played.url,
        timeout=60,
        headers=played.headers,
        limits=httpx.Limits(max_connections=count + 1),
    ) as client:
        sent = [
            asyncio.create_task(client.post("/v2/models/busy/infer", json=body))
            for _ in range(count)
        ]
        held = 0.0
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
        started = time.monotonic()
        stopping = asyncio.create_task(asyncio.to_thread(down))
        responses = await asyncio.gather(*sent, return_exceptions=True)
        await stopping
        seconds = time.monotonic() - started
    codes = [r.status_code if isinstance(r, httpx.Response) else -1 for r in responses]
    return codes, int(held), seconds


@podman_test
def test_taking_it_down_drains_in_flight_requests(image: str, store: Path, tmp_path: Path) -> None:
    with play(image, store, tmp_path) as played:
        # The stop timeout must outlast the drain: every wait of it, plus closing connections.
        assert played.plan.grace_s > played.plan.drain_s + CLOSE_GRACE_SECONDS
        if played.version >= GRACE_PERIOD_IS_STOP_TIMEOUT_FROM:
            assert played.inspect()["Config"]["StopTimeout"] == played.plan.grace_s
        codes, held, seconds = asyncio.run(
            take_down_under_load(played, 48, lambda: take_down(played))
        )
        how = "kube down" if played.version >= KUBE_DOWN_KILLS_BEFORE else "pod stop, kube down"
        print(
            f"podman {played.version}, {how}: {held} held, {codes.count(200)} answered 200, "
            f"{codes.count(503)} 503, {codes.count(-1)} unanswered; {seconds:.1f} s"
        )
        # Every request held when the pod was taken down is answered 200; one arriving during
        # the drain gets 503 with Retry-After, by design. None is reset (-1).
        assert codes.count(200) >= held and set(codes) <= {200, 503}, (held, codes)
        assert seconds < played.plan.grace_s
        assert podman("pod", "exists", played.pod, check=False).returncode == 1
