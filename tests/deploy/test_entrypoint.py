"""The images' start command, run as a process: deploy/docker-entrypoint.sh behind tini, the
way the Dockerfile's ENTRYPOINT runs it, and the HEALTHCHECK script against it.

The gateway role is run for real (loopback, free port, tiny model store): it starts, becomes
ready, serves an inference, and on SIGTERM drains and exits 0. The torchserve and train roles
are run with stand-ins for python and torchserve, to check what they would execute.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.deploy.tools import DEPLOY, REPO, tool
from tests.servers import free_port, wait_until_ready
from tests.tiny_models import full_store

ENTRYPOINT = DEPLOY / "docker-entrypoint.sh"
HEALTHCHECK = DEPLOY / "healthcheck.py"


def healthcheck(*args: str, env: dict[str, str] | None = None) -> int:
    return subprocess.run(
        [sys.executable, str(HEALTHCHECK), *args],
        env={**os.environ, **(env or {})},
        capture_output=True,
        timeout=30,
        check=False,
    ).returncode


def children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(child) for child in text.split()]


@pytest.fixture
def container(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int, Path]]:
    """tini -> docker-entrypoint.sh gateway, with the environment a container would have."""
    store = full_store(tmp_path / "models")
    port = free_port()
    environment = {
        **{key: value for key, value in os.environ.items() if not key.startswith("GATEWAY_")},
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "MODEL_STORE": str(store),
        "GATEWAY_HOST": "127.0.0.1",  # tests stay on loopback; the image defaults to 0.0.0.0
        "GATEWAY_PORT": str(port),
        # A free port for gRPC too: the image's 8001 may be taken on a shared machine.
        "GATEWAY_GRPC_PORT": str(free_port()),
        "GATEWAY_DRAIN_SECONDS": "5",
        "OMP_NUM_THREADS": "1",
    }
    log = tmp_path / "container.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [tool("tini"), "--", str(ENTRYPOINT), "gateway"],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=environment,
            cwd=tmp_path,
        )
    try:
        yield process, port, log
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


@pytest.mark.integration
def test_gateway_container_command_serves_and_drains(
    container: tuple[subprocess.Popen[bytes], int, Path],
) -> None:
    process, port, log = container
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(url, process, timeout_s=60)
    except (RuntimeError, TimeoutError):
        print(log.read_text(errors="replace"))
        raise
    # exec: tini's only child is the server itself, not a shell that would swallow SIGTERM.
    (child,) = children(process.pid)
    command = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
    assert command[1:3] == [b"-m", b"service"], command
    assert httpx.get(url + "/v2/health/live").status_code == 200
    assert healthcheck(env={"GATEWAY_PORT": str(port)}) == 0
    body = {
        "inputs": [
            {
                "name": "features",
                "datatype": "FP32",
                "shape": [2, 4],
                "data": [0.1, 0.2, 0.3, 0.4, 1.0, 0.0, -1.0, 0.5],
            }
        ]
    }
    answer = httpx.post(f"{url}/v2/models/tab/infer", json=body, timeout=30)
    assert answer.status_code == 200, answer.text
    (output,) = answer.json()["outputs"]
    assert output["name"] == "probabilities" and output["shape"] == [2, 3]
    assert "gateway_requests_total" in httpx.get(url + "/metrics").text

    started = time.monotonic()
    process.send_signal(signal.SIGTERM)  # what `docker stop` / the kubelet send to PID 1
    assert process.wait(timeout=30) == 0, log.read_text(errors="replace")
    assert time.monotonic() - started < 10
    assert healthcheck(env={"GATEWAY_PORT": str(port)}) == 1


def test_healthcheck_reports_failures(tmp_path: Path) -> None:
    closed = free_port()
    assert healthcheck(f"http://127.0.0.1:{closed}/v2/health/ready") == 1


# ---- the other roles, with stand-ins that record what they were asked to run ----


@pytest.fixture
def stand_ins(tmp_path: Path) -> tuple[dict[str, str], Path]:
    record = tmp_path / "calls.jsonl"
    fake = tmp_path / "bin"
    fake.mkdir()
    script = (
        f"#!{sys.executable}\n"
        "import json, os, sys\n"
        f"with open({str(record)!r}, 'a') as out:\n"
        "    env = {k: v for k, v in os.environ.items() if k.startswith(('GATEWAY_', 'TS_'))}\n"
        "    out.write(json.dumps({'argv': sys.argv, 'env': env}) + '\\n')\n"
    )
    for name in ("python", "torchserve"):
        (fake / name).write_text(script)
        (fake / name).chmod(0o755)
    environment = {
        **{
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("GATEWAY_", "TS_"))
        },
        "PATH": f"{fake}{os.pathsep}{os.environ['PATH']}",
        "TMPDIR": str(tmp_path),
    }
    environment.pop("MODEL_STORE", None)
    environment.pop("PYTHON", None)
    return environment, record


def calls(record: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in record.read_text().splitlines()]


def run_entrypoint(environment: dict[str, str], *args: str) -> None:
    subprocess.run([str(ENTRYPOINT), *args], env=environment, cwd=REPO, check=True, timeout=30)


def test_gateway_role_defaults(stand_ins: tuple[dict[str, str], Path]) -> None:
    environment, record = stand_ins
    run_entrypoint(environment)  # no arguments: the image's CMD default
    run_entrypoint(environment, "--log-level", "debug")  # flags only: still the gateway
    first, second = calls(record)
    assert first["argv"][1:] == ["-m", "service"]  # type: ignore[index]
    assert first["env"] == {"GATEWAY_HOST": "0.0.0.0", "GATEWAY_MODEL_STORE": "/models"}
    assert second["argv"][1:] == ["-m", "service", "--log-level", "debug"]  # type: ignore[index]


def test_train_role(stand_ins: tuple[dict[str, str], Path]) -> None:
    environment, record = stand_ins
    run_entrypoint({**environment, "MODEL_STORE": "/data/store"}, "train", "--missing")
    (call,) = calls(record)
    assert call["argv"][1:] == [
        "-m",
        "training",
        "all",
        "--model-store",
        "/data/store",
        "--missing",
    ]  # type: ignore[index]


def test_torchserve_role(stand_ins: tuple[dict[str, str], Path], tmp_path: Path) -> None:
    environment, record = stand_ins
    archives = tmp_path / "archives"
    run_entrypoint({**environment, "TS_ARCHIVES": str(archives)}, "torchserve")
    archive, serve = calls(record)
    assert archive["argv"][1:] == [  # type: ignore[index]
        "-m",
        "deploy.torchserve.archive",
        "--model-store",
        "/models",
        "--out-dir",
        str(archives),
        "--config-dir",
        "deploy/torchserve/model-config",
    ]
    argv = serve["argv"]
    assert argv[1:5] == ["--start", "--foreground", "--no-config-snapshots", "--disable-token-auth"]  # type: ignore[index]
    config = Path(argv[argv.index("--ts-config") + 1])  # type: ignore[union-attr, index]
    assert argv[argv.index("--model-store") + 1] == str(archives)  # type: ignore[union-attr, index]
    # The project's config, then the container's overrides; Java properties: the last one wins.
    properties: dict[str, str] = {}
    for line in config.read_text().splitlines():
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            properties[key.strip()] = value.strip()
    assert properties["inference_address"] == "http://0.0.0.0:8080"
    assert properties["metrics_address"] == "http://0.0.0.0:8082"
    assert properties["management_address"] == "http://127.0.0.1:8081"
    assert properties["model_store"] == str(archives)
    assert properties["disable_token_authorization"] == "true"
    assert properties["metrics_mode"] == "prometheus"  # kept from deploy/torchserve
    # The ports the image EXPOSEs, the Service targets and Prometheus scrapes.
    assert config.read_text().startswith((DEPLOY / "torchserve" / "config.properties").read_text())
