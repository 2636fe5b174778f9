"""`BACKEND=torchserve make run`: TorchServe and the gateway in front, started and stopped."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from deploy.torchserve.archive import build_archives
from deploy.torchserve.launcher import free_port
from deploy.torchserve.stack import main, servable_models
from tests import tiny_models
from tests.handlers import torch_models
from tests.handlers.servers import require_java
from tests.servers import wait_until_ready


def test_servable_models_need_an_archive_and_a_version(tmp_path: Path) -> None:
    torch_models.regressor(tmp_path)
    tiny_models.classifier(tmp_path)
    (tmp_path / "reg.mar").write_bytes(b"")
    (tmp_path / "orphan.mar").write_bytes(b"")
    assert servable_models(tmp_path) == ["reg"]


def test_no_archives_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--model-store", str(tmp_path)]) == 2
    assert "make archives" in capsys.readouterr().out


@pytest.mark.integration
def test_stack_serves_through_the_gateway_and_stops_cleanly(tmp_path: Path) -> None:
    require_java()
    store = tmp_path / "store"
    torch_models.regressor(store)
    build_archives(store, store)
    port, torchserve_port = free_port(), free_port()
    command = [
        sys.executable,
        "-m",
        "deploy.torchserve.stack",
        "--model-store",
        str(store),
        "--port",
        str(port),
        "--grpc-port",
        str(free_port()),
        "--torchserve-port",
        str(torchserve_port),
        "--work-dir",
        str(tmp_path / "work"),
    ]
    log = tmp_path / "stack.log"
    with log.open("wb") as sink:
        stack = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT)
    try:
        wait_until_ready(f"http://127.0.0.1:{port}", stack, timeout_s=240)
        answer = httpx.post(f"http://127.0.0.1:{port}/predictions/reg", json=[1.0, 1.0, 1.0])
        assert answer.json() == pytest.approx(6.0)
        direct = httpx.post(f"http://127.0.0.1:{torchserve_port}/predictions/reg", json=[1, 1, 1])
        assert direct.status_code in (400, 401)  # TorchServe itself wants its key
        stack.send_signal(signal.SIGTERM)
        assert stack.wait(timeout=60) == 0
    finally:
        if stack.poll() is None:
            stack.kill()
            stack.wait()
        print(log.read_text(errors="replace")[-3000:])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{torchserve_port}/ping", timeout=0.5)
        except httpx.TransportError:
            break
        time.sleep(0.2)
    else:
        pytest.fail("TorchServe still answers after the stack stopped")
