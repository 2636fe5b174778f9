"""TorchServe faults behind the gateway: a killed worker and a stalled TorchServe.

The gateway must answer 503 (worker gone) or 504 (stall) within its backend timeout, never
hang, mark the model not ready, and recover by itself. (TorchServe killed outright is covered
in tests/service/test_torchserve_backend.py.)
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx
import psutil
import pytest

from deploy.torchserve.archive import build_archives
from deploy.torchserve.launcher import launch
from tests.handlers import torch_models
from tests.handlers.servers import require_java
from tests.servers import gateway

pytestmark = pytest.mark.integration

TIMEOUT_S = 1.0
ROW = [1.0, 1.0, 1.0]


def wait_for(check, deadline_s: float, what: str) -> float:  # type: ignore[no-untyped-def]
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < deadline_s, f"{what} not within {deadline_s} s"
        time.sleep(0.05)
    return time.monotonic() - started


def test_worker_killed_and_torchserve_stalled(tmp_path: Path) -> None:
    require_java()
    store = tmp_path / "store"
    torch_models.regressor(store)
    build_archives(store, store)
    server = launch(store, tmp_path / "work", ["reg"])
    env = {
        "GATEWAY_TORCHSERVE_URL": server.inference_url,
        "GATEWAY_TORCHSERVE_KEY_FILE": str(server.key_file),
        "GATEWAY_TORCHSERVE_TIMEOUT_S": str(TIMEOUT_S),
    }
    try:
        with gateway(store, tmp_path, ["--backend", "torchserve"], env=env) as process:
            url = f"{process.url}/predictions/reg"
            ready = f"{process.url}/v2/models/reg/ready"
            assert httpx.post(url, json=ROW).json() == pytest.approx(6.0)

            # 1. Kill the Python worker: TorchServe restarts it; the gateway never hangs and
            #    answers again once the new worker is up.
            workers = [
                p
                for p in psutil.Process(server.process.pid).children(recursive=True)
                if "model_service_worker" in " ".join(p.cmdline())
            ]
            assert workers, "no TorchServe worker process found"
            for worker in workers:
                worker.kill()
            codes = []
            started = time.monotonic()
            while time.monotonic() - started < 60:
                t0 = time.monotonic()
                response = httpx.post(url, json=ROW, timeout=10)
                assert time.monotonic() - t0 < TIMEOUT_S + 1.5, "a request hung"
                codes.append(response.status_code)
                if response.status_code == 200:
                    break
                assert response.status_code in (503, 504), response.text
                time.sleep(0.1)
            assert codes[-1] == 200, codes

            # 2. Stall TorchServe (SIGSTOP its whole process group): 504 on time, not ready,
            #    then back by itself after SIGCONT.
            os.killpg(server.process.pid, signal.SIGSTOP)
            try:
                t0 = time.monotonic()
                stalled = httpx.post(url, json=ROW, timeout=10)
                elapsed = time.monotonic() - t0
                assert stalled.status_code == 504, stalled.text
                assert "error" in stalled.json()
                assert elapsed < TIMEOUT_S + 1.5
                wait_for(lambda: httpx.get(ready).status_code == 503, 5, "not-ready")
            finally:
                os.killpg(server.process.pid, signal.SIGCONT)
            wait_for(lambda: httpx.get(ready).status_code == 200, 30, "recovery")
            assert httpx.post(url, json=ROW).json() == pytest.approx(6.0)
    finally:
        server.stop()
